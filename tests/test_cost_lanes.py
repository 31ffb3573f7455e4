"""Cost lanes (issue 19): the light lane forwards an object to objects.heavy.v1 as soon as it shows to be over a light
limit (by its event, its page count, the pixels it would OCR, its chunks or the light budget), unread or before any
OCR where the cost shows that early; the heavy lane does the same object under the hard limits only."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.text_embedder.extract import Budget, Extractor, Limits
from consumers.text_embedder.handler import TextEmbedder, TextEmbedderSettings
from consumers.text_embedder.lanes import LANE_REASON_HEADER, HeavyObject, LightLimits
from mmrag.errors import PermanentError
from mmrag.messages import Envelope, Output
from mmrag.pb.events_pb2 import EmbeddingBatch, MediaKind, ObjectEvent
from mmrag.text_encoder import MiniLMEncoder
from tests.documents import docx_bytes, pdf_bytes, scanned_pdf
from tests.test_heavy_work import CountingOcr
from tests.test_odd_inputs import RecordingStore

pytestmark = pytest.mark.unit
TEXT, DOC = MediaKind.MEDIA_KIND_TEXT, MediaKind.MEDIA_KIND_DOCUMENT
WORDS = "Kafka partitions keep the order of events per key while consumer groups share them. "


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder()


def embedder(lane: str, objects: dict[str, bytes], encoder: MiniLMEncoder, **settings: Any) -> TextEmbedder:
    config = TextEmbedderSettings(lane=lane, topic_prefix="p.", ocr_images=False, **settings)  # type: ignore[arg-type]
    handler = TextEmbedder(config, RecordingStore(objects), encoder, None, CountingOcr())  # type: ignore[arg-type]
    handler.warm_up()
    return handler


def envelopes(objects: dict[str, bytes], kinds: dict[str, int]) -> list[Envelope[ObjectEvent]]:
    out = []
    for n, (key, data) in enumerate(objects.items()):
        event = ObjectEvent(
            object_id=f"b/{key}", bucket="b", key=key, version="v1", size=len(data), media_kind=kinds.get(key, TEXT)
        )
        headers = {"object-id": event.object_id, "version": "v1", "event-time-ms": "5", "traceparent": "00-x"}
        out.append(Envelope(event.object_id, event, headers, "p.objects.v1", 0, n, 0))
    return out


def test_the_light_lane_forwards_heavy_objects_and_embeds_the_small_ones(encoder: MiniLMEncoder) -> None:
    objects = {
        "big.txt": (WORDS * 2000).encode(),  # 168 KB: over MMRAG_LIGHT_MAX_BYTES by its event, never read
        "book.pdf": pdf_bytes([f"page {n}" for n in range(30)]),  # 30 pages
        "scans.pdf": scanned_pdf(2),  # 2 A4 pages to OCR at 200 dpi: 2 x 1654 x 2339 pixels
        "long.txt": (WORDS * 1200).encode(),  # 100 KB: under the bytes, over 64 chunks
        "report.docx": docx_bytes([WORDS * 40] * 50, ["a", "b"]),  # small file, a large body
        "note.txt": b"A one-line note about tide pools.",
    }
    kinds = {"book.pdf": DOC, "scans.pdf": DOC, "report.docx": DOC}
    handler = embedder("light", objects, encoder)
    batch = envelopes(objects, kinds)
    results = dict(zip(objects, handler.handle(batch), strict=True))

    forwarded = {key: out for key, out in results.items() if key != "note.txt"}
    reasons = {}
    for key, outputs in forwarded.items():
        assert isinstance(outputs, list) and len(outputs) == 1, (key, outputs)
        [out] = outputs
        assert out.topic == "p.objects.heavy.v1" and out.key == f"b/{key}"
        assert isinstance(out.value, ObjectEvent) and out.value.key == key  # the same event, for the heavy lane
        assert out.headers["version"] == "v1" and out.headers["event-time-ms"] == "5"
        assert "traceparent" not in out.headers  # the runner gives it the light lane's span
        reasons[key] = out.headers[LANE_REASON_HEADER]
    assert reasons["big.txt"] == "168000 bytes, over the light lane's MMRAG_LIGHT_MAX_BYTES=131072"
    assert reasons["book.pdf"] == "30 pages, over the light lane's MMRAG_LIGHT_MAX_PAGES=20"
    assert reasons["scans.pdf"] == "7737412 pixels to OCR, over the light lane's MMRAG_LIGHT_MAX_OCR_PIXELS=4000000"
    assert reasons["long.txt"] == "more than 64 chunks, over the light lane's MMRAG_LIGHT_MAX_CHUNKS=64"
    assert "bytes of DOCX body, over the light lane's MMRAG_LIGHT_MAX_BYTES" in reasons["report.docx"]
    assert "big.txt" not in handler.store.reads  # type: ignore[attr-defined]
    assert handler.ocr.runs == 0  # type: ignore[attr-defined]

    [note] = results["note.txt"]  # type: ignore[misc]
    assert isinstance(note, Output) and note.topic == "p.embeddings.v1"
    assert isinstance(note.value, EmbeddingBatch) and note.value.chunks[0].text == "A one-line note about tide pools."


def test_the_heavy_lane_embeds_what_the_light_lane_forwarded(encoder: MiniLMEncoder) -> None:
    objects = {"long.txt": (WORDS * 1200).encode(), "book.pdf": pdf_bytes([f"page {n} of a book" for n in range(30)])}
    handler = embedder("heavy", objects, encoder)
    results = handler.handle(envelopes(objects, {"book.pdf": DOC}))
    for outputs in results:
        assert isinstance(outputs, list)
        [out] = outputs
        assert out.topic == "p.embeddings.v1" and isinstance(out.value, EmbeddingBatch)
    batches = [out.value for outputs in results for out in outputs]  # type: ignore[union-attr]
    assert len(batches[0].chunks) > 64  # type: ignore[union-attr]
    assert sorted({c.page for c in batches[1].chunks}) == list(range(1, 31))  # type: ignore[union-attr]


def test_a_tombstone_is_deleted_in_the_light_lane_and_follows_into_the_heavy_one(encoder: MiniLMEncoder) -> None:
    handler = embedder("light", {}, encoder)
    headers = {"object-id": "b/gone.pdf", "version": "v2", "event-time-ms": "9"}
    [outputs] = handler.handle([Envelope("b/gone.pdf", None, headers, "p.objects.v1", 0, 0, 0)])
    assert isinstance(outputs, list)
    deletion, follow = outputs
    assert deletion.topic == "p.embeddings.v1" and isinstance(deletion.value, EmbeddingBatch)
    assert deletion.value.deleted and deletion.value.object_id == "b/gone.pdf"
    assert follow.topic == "p.objects.heavy.v1" and follow.key == "b/gone.pdf" and follow.value is None
    assert follow.headers["version"] == "v2"

    [alone] = embedder("all", {}, encoder).handle([Envelope("b/gone.pdf", None, headers, "p.objects.v1", 0, 0, 0)])
    assert isinstance(alone, list) and [o.topic for o in alone] == ["p.embeddings.v1"]  # one group: nothing follows


def test_hard_limits_come_first_in_the_light_lane(encoder: MiniLMEncoder) -> None:
    objects = {"huge.pdf": scanned_pdf(12)}
    handler = embedder("light", objects, encoder, max_ocr_pages=3)
    [result] = handler.handle(envelopes(objects, {"huge.pdf": DOC}))
    assert isinstance(result, PermanentError) and "MMRAG_MAX_OCR_PAGES=3" in result.problem  # DLQ, not forwarded


def test_extraction_past_the_light_budget_is_forwarded_not_failed() -> None:
    ticks = iter(range(0, 10_000))  # a clock that moves 1 s per look
    budget = Budget("b/slow.pdf", 120, clock=lambda: float(next(ticks)), light_s=2)
    extractor = Extractor(CountingOcr(), Limits(), LightLimits())
    read = []
    with pytest.raises(HeavyObject) as heavy:
        for page in extractor.pages(DOC, pdf_bytes(["a", "b", "c", "d"]), "b/slow.pdf", "", budget):
            read.append(page.number)
    assert read == [1, 2] and heavy.value.setting == "MMRAG_LIGHT_BUDGET_S"
    assert heavy.value.reason == "extraction took over the light lane's MMRAG_LIGHT_BUDGET_S=2s"


def test_lanes_read_their_own_topic_in_their_own_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMRAG_TOPIC_PREFIX", "d.")
    light, heavy, alone = (TextEmbedderSettings(lane=lane) for lane in ("light", "heavy", "all"))  # type: ignore[arg-type]
    assert (light.lane_group, heavy.lane_group, alone.lane_group) == (
        "embedder-text",
        "embedder-text-heavy",
        "embedder-text",
    )
    assert light.light_limits == LightLimits() and heavy.light_limits is None and alone.light_limits is None
    assert heavy.topics.objects_heavy == "d.objects.heavy.v1"
    assert (heavy.max_batch, light.max_batch) == (1, 32)  # a heavy object never waits in a batch for another
    monkeypatch.setenv("MMRAG_MAX_BATCH", "4")
    assert TextEmbedderSettings(lane="heavy").max_batch == 4
