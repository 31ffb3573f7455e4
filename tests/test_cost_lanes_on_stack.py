"""Cost lanes on the real stack (issue 19: a one-line note uploaded behind a scanned book waited minutes): a scanned
PDF uploaded just before a one-line control file is forwarded to the heavy lane, the control file is indexed while
the heavy lane is still reading the scan, and the scan is indexed later, then deleted after its versions."""

from __future__ import annotations

from typing import Any

import pytest

from mmrag.ids import object_id
from mmrag.object_store import S3ObjectStore
from mmrag.pb.events_pb2 import EmbeddingBatch, IndexState, IndexStatus
from mmrag.topics import Topics
from tests.documents import scanned_pdf
from tests.index_tools import statuses
from tests.kafka_tools import Landed, read_topic, wait_for

pytestmark = pytest.mark.kafka
SCANNED_PAGES = 25  # over MMRAG_LIGHT_MAX_PAGES (20); ~1 s of Tesseract per page on this machine
INDEXED = IndexState.INDEX_STATE_INDEXED


def indexed(bootstrap: str, topics: Topics, oid: str) -> IndexStatus | None:
    status = statuses(bootstrap, topics).get(oid)
    return status if status is not None and status.state == INDEXED else None


def test_a_control_file_behind_a_scanned_book_is_indexed_while_the_book_is_read(deployment: Any) -> None:
    from local_stack.stack import start_services

    start_services(
        [deployment.service(n) for n in ("sqs_bridge", "normalizer", "index_updater")] + deployment.text_lanes()
    )
    bootstrap, topics = deployment.endpoints.bootstrap_servers, Topics(deployment.topic_prefix)
    store = S3ObjectStore(deployment.s3_settings(), "test")
    store.put(deployment.bucket, "scanned-book.pdf", scanned_pdf(SCANNED_PAGES, "HARBOUR LEDGER"), "application/pdf")
    store.put(deployment.bucket, "note.txt", b"Pick up the sourdough starter on Friday.", "text/plain")
    book, note = object_id(deployment.bucket, "scanned-book.pdf"), object_id(deployment.bucket, "note.txt")

    control = wait_for(lambda: indexed(bootstrap, topics, note), 120, "the control file indexed")
    assert indexed(bootstrap, topics, book) is None, "the control file did not wait for the scan"
    scan = wait_for(lambda: indexed(bootstrap, topics, book), 600, "the scanned book indexed by the heavy lane")

    control_s = (control.indexed_at_ms - control.event_time_ms) / 1000
    scan_s = (scan.indexed_at_ms - scan.event_time_ms) / 1000
    print(f"upload -> indexed: control file {control_s:.1f} s, scanned book {scan_s:.1f} s")  # pytest -s
    assert control.text_chunks == 1 and scan.text_chunks >= SCANNED_PAGES
    assert control_s < 20 and control_s < scan_s / 3, (control_s, scan_s)

    def landed(topic: str) -> list[Landed] | None:  # a fresh reader may see nothing within its idle time
        return [r for r in read_topic(bootstrap, topic, idle_s=1) if r.key == book] or None

    [forwarded] = wait_for(lambda: landed(topics.objects_heavy), 60, "the scan on objects.heavy.v1")
    assert forwarded.headers["lane-reason"] == "25 pages, over the light lane's MMRAG_LIGHT_MAX_PAGES=20"
    embedded = wait_for(lambda: landed(topics.embeddings), 60, "the scan's embeddings")
    pages = {c.page for r in embedded for c in EmbeddingBatch.FromString(r.value or b"").chunks}
    assert pages == set(range(1, SCANNED_PAGES + 1))

    store.delete(deployment.bucket, "scanned-book.pdf")

    def deleted_by_both_lanes() -> list[EmbeddingBatch] | None:
        batches = [
            EmbeddingBatch.FromString(r.value or b"") for r in read_topic(bootstrap, topics.embeddings, idle_s=1)
        ]
        deletions = [b for b in batches if b.object_id == book and b.deleted]
        return deletions if len(deletions) == 2 else None

    wait_for(deleted_by_both_lanes, 120, "the delete applied by the light lane and, after the scan, the heavy lane")
    final = wait_for(lambda: statuses(bootstrap, topics).get(book), 30, "the scan's last status")
    assert final.state == IndexState.INDEX_STATE_DELETED
