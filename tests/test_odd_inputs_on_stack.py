"""Blank images and text of no confident encoding through the deployed pipeline: S3 -> SQS -> sqs_bridge ->
normalizer -> objects.v1 -> text and vision embedders. Each refused object lands on the DLQ once, from the stage
that refuses it, naming the problem and the fix; real cp1252 text and a visible image are embedded."""

from __future__ import annotations

import pytest

from mmrag.object_store import S3ObjectStore
from mmrag.pb.events_pb2 import EmbeddingBatch, Modality
from tests.documents import circle_png
from tests.kafka_tools import Landed, read_topic, wait_for
from tests.object_events import dlq_records, object_records
from tests.test_blank_and_undecodable import BLANK, DAMAGED_UTF8, FRENCH, STRAY_BYTES

pytestmark = pytest.mark.kafka


def embeddings(bootstrap: str, prefix: str) -> dict[tuple[str, int], EmbeddingBatch]:
    """embeddings.v1 by (object id, modality), vectors only (not the ``deleted`` batches of tombstones)."""
    found = {}
    for m in read_topic(bootstrap, f"{prefix}embeddings.v1", idle_s=1):
        batch = EmbeddingBatch.FromString(m.value or b"")
        if not batch.deleted:
            found[(batch.object_id, batch.modality)] = batch
    return found


def test_blank_images_and_undecodable_text_are_dead_letters_once(deployment, bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    from local_stack.stack import start_services

    start_services([deployment.service(name) for name in ("sqs_bridge", "normalizer", "text_embedder")])
    start_services([deployment.service("vision_embedder")])
    store = S3ObjectStore(deployment.s3_settings(), "test")
    bucket, prefix = deployment.bucket, deployment.topic_prefix
    refused = {
        "blank/script.svg": (BLANK["script.svg"], "vision_embedder", "renders blank"),
        "blank/white.png": (BLANK["white.png"], "vision_embedder", "renders blank"),
        "text/stray.txt": (STRAY_BYTES, "normalizer", "undecodable text: not UTF-8"),
        "text/damaged.txt": (DAMAGED_UTF8, "normalizer", "undecodable text: damaged UTF-8"),
    }
    indexed = {"text/menu.txt": FRENCH.encode("cp1252"), "img/circle.png": circle_png()}
    for key, (data, _, _) in refused.items():
        store.put(bucket, key, data)
    for key, data in indexed.items():
        store.put(bucket, key, data)
    oid = {key: f"{bucket}/{key}" for key in [*refused, *indexed]}

    def landed() -> list[Landed]:
        return dlq_records(bootstrap, prefix)

    wait_for(lambda: len(landed()) >= len(refused), 180, "a dead letter for each refused object")
    wanted = {(oid["text/menu.txt"], Modality.MODALITY_TEXT), (oid["img/circle.png"], Modality.MODALITY_IMAGE)}
    found = wait_for(lambda: (e := embeddings(bootstrap, prefix)).keys() >= wanted and e, 120, "the embeddings")

    letters = landed()
    assert sorted(d.key or "" for d in letters) == sorted(oid[key] for key in refused)  # once each
    for letter in letters:
        key = (letter.key or "").removeprefix(f"{bucket}/")
        _, stage, problem = refused[key]
        assert letter.headers["dlq-stage"] == stage and problem in letter.headers["dlq-error-message"], key
    fixes = {(d.key or "").removeprefix(f"{bucket}/"): d.headers["dlq-fix"] for d in letters}
    assert fixes["blank/script.svg"].startswith("upload the image with visible content")
    assert fixes["text/stray.txt"].startswith("save it as UTF-8")
    assert set(found) == wanted  # no image vector of a blank image, no text of a guessed encoding
    text = " ".join(c.text for c in found[(oid["text/menu.txt"], Modality.MODALITY_TEXT)].chunks)
    assert "crème brûlée" in text and "pâtissière" in text
    rejected = {r[0]: r[2] for r in object_records(bootstrap, prefix) if r[1] == "tombstone"}
    assert set(rejected) == {oid["text/stray.txt"], oid["text/damaged.txt"]}
