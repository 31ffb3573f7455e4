"""The normalizer's pure parts: ordering by sequencer/event time, dedup verdicts, and content sniffing."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from mmrag.pb.events_pb2 import MediaKind
from producers.content_sniffing import sniff
from producers.object_table import ObjectTable, Verdict, compare_sequencers
from producers.s3_events import S3Change

pytestmark = pytest.mark.unit


def put(t: int, etag: str = "e1", seq: str = "", version_id: str = "") -> S3Change:
    return S3Change("b", "k", "ObjectCreated:Put", t, 5, etag, version_id, seq)


def delete(t: int, seq: str = "", version_id: str = "", marker: bool = False) -> S3Change:
    name = "ObjectRemoved:DeleteMarkerCreated" if marker else "ObjectRemoved:Delete"
    return S3Change("b", "k", name, t, 0, "", version_id, seq)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("0A", "0B", -1),
        ("00617F08299329D189", "00617F08299329D18A", -1),
        ("0055AED6DCD90281E5", "0055AED6DCD90281E5", 0),
        ("0055AED6DCD9", "0055AED6DCD90000", 0),  # right-padded with zeros before comparing
        ("0055AED6DCDA", "0055AED6DCD90281E5", 1),
        ("ff", "FE", 1),
    ],
)
def test_sequencers_compare_as_right_padded_hex(a: str, b: str, expected: int) -> None:
    assert compare_sequencers(a, b) == expected


def test_out_of_order_pair_never_resurrects_an_old_version_or_undoes_a_delete() -> None:
    table = ObjectTable()
    assert table.verdict(put(200, "new"), (0, 1, 0)) == Verdict.EMIT
    table.record(put(200, "new"), (0, 1, 0), live=True)
    assert table.verdict(put(100, "old"), (0, 2, 0)) == Verdict.STALE
    table.record(delete(300), (0, 3, 0), live=False)
    assert table.verdict(put(250, "new"), (0, 4, 0)) == Verdict.STALE
    assert table.verdict(put(400, "newer"), (0, 5, 0)) == Verdict.EMIT


def test_sequencer_beats_event_time_when_both_sides_have_one() -> None:
    table = ObjectTable()
    table.record(put(100, "v2", seq="0B"), (0, 1, 0), live=True)
    assert table.verdict(put(900, "v1", seq="0A"), (0, 2, 0)) == Verdict.STALE  # clock skew does not matter
    assert table.verdict(delete(50, seq="0C"), (0, 3, 0)) == Verdict.EMIT


def test_same_notification_twice_is_a_duplicate_unless_it_is_the_same_record_again() -> None:
    table = ObjectTable()
    table.record(put(100), (0, 1, 0), live=True)
    assert table.verdict(put(100), (0, 7, 0)) == Verdict.DUPLICATE  # redelivered: another offset
    assert table.verdict(put(100), (0, 1, 0)) == Verdict.EMIT  # the record itself again: its batch did not commit
    assert table.verdict(delete(100), (0, 8, 0)) == Verdict.EMIT  # same instant, other change: arrival order


def test_duplicate_of_a_rejected_version_is_a_duplicate() -> None:
    table = ObjectTable()
    table.record(put(100, "bin"), (0, 1, 0), live=False)  # rejected: tombstoned
    assert table.verdict(put(100, "bin"), (0, 2, 0)) == Verdict.DUPLICATE


def test_delete_of_a_noncurrent_version_keeps_the_current_one() -> None:
    table = ObjectTable()
    table.record(put(200, version_id="v2"), (0, 1, 0), live=True)
    assert table.verdict(delete(300, version_id="v1"), (0, 2, 0)) == Verdict.NONCURRENT
    assert table.verdict(delete(300, version_id="v2"), (0, 3, 0)) == Verdict.EMIT
    assert table.verdict(delete(300, version_id="dm", marker=True), (0, 4, 0)) == Verdict.EMIT


def test_restore_from_objects_headers_rebuilds_the_verdicts() -> None:
    table = ObjectTable()
    change = delete(300)
    table.restore(change.identity_headers(), "b/k", tombstone=True)
    assert len(table) == 1
    assert table.verdict(put(250), (0, 1, 0)) == Verdict.STALE
    assert table.verdict(delete(300), (0, 2, 0)) == Verdict.DUPLICATE


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("head", "kind", "content_type"),
    [
        (png(), MediaKind.MEDIA_KIND_IMAGE, "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01", MediaKind.MEDIA_KIND_IMAGE, "image/jpeg"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", MediaKind.MEDIA_KIND_DOCUMENT, "application/pdf"),
        (b"  <!DOCTYPE html><html><body>hi</body></html>", MediaKind.MEDIA_KIND_DOCUMENT, "text/html"),
        (
            b"PK\x03\x04\x14\x00\x06\x00[Content_Types].xml...word/document.xml",
            MediaKind.MEDIA_KIND_DOCUMENT,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),  # fmt: skip
        (b"# Notes\n\nKafka groups share partitions.\n", MediaKind.MEDIA_KIND_TEXT, "text/plain; charset=utf-8"),
        ("café ☕".encode()[:-1], MediaKind.MEDIA_KIND_TEXT, "text/plain; charset=utf-8"),  # cut mid-character
    ],
)
def test_sniffing_routes_by_bytes(head: bytes, kind: int, content_type: str) -> None:
    found = sniff(head)
    assert (found.media_kind, found.content_type) == (kind, content_type)


def test_the_key_names_the_format_of_plain_text_only() -> None:
    text = b"# Notes\n\nKafka groups share partitions.\n"
    assert sniff(text, "docs/notes.md").content_type == "text/markdown; charset=utf-8"
    assert sniff(text, "data/rows.CSV").content_type == "text/csv; charset=utf-8"
    legacy = "Grüße aus München, die Straße ist schön.".encode("cp1252")
    assert sniff(legacy, "a.json").content_type == "application/json; charset=cp1252"
    assert sniff(text, "no-extension").content_type == "text/plain; charset=utf-8"
    assert sniff(text, "page.html").content_type == "text/plain; charset=utf-8"  # the bytes are not HTML
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    assert sniff(png, "picture.md").content_type == "image/png"  # the bytes decide the kind


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"", "empty"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00>\x00", "binary"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00data.bin", "ZIP archive"),
        (b"\x00\x01\x02\x03 random \xfe\xff bytes", "binary"),
    ],
)
def test_unsupported_content_says_why(head: bytes, why: str) -> None:
    found = sniff(head)
    assert not found.supported and why in found.reason


def test_decisions_become_state_only_when_their_batch_commits() -> None:
    """A batch whose transaction aborts leaves no state behind: its changes are news again when redelivered;
    once committed they are duplicates."""
    table = ObjectTable()
    table.record(put(100, "v1"), (0, 1, 0), live=True)
    assert table.staged == 1 and len(table) == 0
    table.abort()
    assert table.staged == 0 and len(table) == 0
    assert table.verdict(put(100, "v1"), (0, 9, 0)) == Verdict.EMIT, "the aborted decision is forgotten"
    table.record(put(100, "v1"), (0, 9, 0), live=True)
    assert table.verdict(put(100, "v1"), (0, 10, 0)) == Verdict.DUPLICATE, "staged decisions count within the batch"
    table.commit()
    assert table.staged == 0 and len(table) == 1
    assert table.verdict(put(100, "v1"), (0, 11, 0)) == Verdict.DUPLICATE
