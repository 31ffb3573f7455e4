"""Joint index updater: embeddings.v1 -> fused rows upserted into the vector index -> index-status.v1.

A sink stage: the upsert/delete is durable before the runner commits offsets; redelivery is harmless because rows
are keyed by vector_id. With Faiss (``MMRAG_INDEX_BACKEND`` faiss or both) the rows and tombstones also go to
vectors.v1 as outputs of the batch, which the runner flushes before it commits, like index-status.v1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

from prometheus_client import Histogram
from pydantic import Field

from index_updater.fusion import plan_update
from index_updater.status_gate import StatusGate
from mmrag import metrics
from mmrag.errors import PermanentError
from mmrag.ids import shard_for
from mmrag.messages import Envelope, Output, now_ms
from mmrag.pb.events_pb2 import EmbeddingBatch, Modality
from mmrag.runner import ItemResult
from mmrag.settings import BaseServiceSettings, SpaceSettings, VectorStoreSettings
from mmrag.space import EmbeddingSpace
from mmrag.tracing import trace_exemplar
from mmrag.vector_index import IndexWriter
from mmrag.vector_log import VectorLogTable, vector_outputs

log = logging.getLogger(__name__)
STAGE = "index_updater"
READERS_FRESHNESS = Histogram(
    "mmrag_readers_update_freshness_seconds",
    "From an object's tag change (its event time) to its rows carrying the new readers",
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120),
)


class IndexUpdaterSettings(BaseServiceSettings, SpaceSettings, VectorStoreSettings):
    group: str = "index-updater"
    index_backend: Literal["milvus", "faiss", "both"] = Field(
        default="faiss",
        description="where rows go: vectors.v1 (for Faiss retrieval workers), Milvus (a real server by "
        "MMRAG_MILVUS_URI), or both; with faiss alone the updater keeps its objects' rows in memory, restored from "
        "vectors.v1 on assignment",
    )

    max_batch: int = Field(
        default=256,
        description="most embedding batches one poll batch takes: each batch waits once for the Faiss replicas to "
        "apply it (32 held bench.scale to 77 obj/s on a loaded box, 256 gave 287)",
    )
    faiss_applied_max_age_s: float = Field(
        default=5.0,
        gt=0,
        description="a Faiss replica whose last applied mark (vectors.applied.v1) is older is not waited for "
        "(a few times the workers' MMRAG_FAISS_APPLIED_INTERVAL_S)",
    )
    faiss_applied_wait_s: float = Field(
        default=300.0,
        gt=0,
        description="longest wait for the Faiss replicas to apply a batch before its statuses go out; then the "
        "batch is redone after a back-off",
    )

    @property
    def produces_vectors(self) -> bool:
        return self.index_backend != "milvus"


class IndexUpdater:
    stage = STAGE

    def __init__(
        self,
        settings: IndexUpdaterSettings,
        space: EmbeddingSpace,
        index: IndexWriter,
        vector_partitions: Callable[[], int] | None = None,
        gate: StatusGate | None = None,
    ) -> None:
        """``index`` is Milvus, or a VectorLogTable with Faiss alone; ``vector_partitions`` counts vectors.v1's
        partitions (checked against MMRAG_SHARDS at warm-up) when the updater produces vectors; ``gate`` holds
        the statuses until the Faiss replicas applied the rows (the runner asks it, see status_gate.py)."""
        metrics.FRESHNESS.labels(STAGE)  # served at 0 from the start: a first observation is an increase to rate()
        self.settings = settings
        self.space = space
        self.index = index
        self.status_topic = settings.topics.index_status
        self.vectors_topic = settings.topics.vectors if settings.produces_vectors else None
        self.vector_partitions = vector_partitions
        self.visibility_gate = gate

    def warm_up(self) -> None:
        self.index.start()
        if self.visibility_gate is not None:
            self.visibility_gate.start()
        if self.vectors_topic and self.vector_partitions is not None:
            found = self.vector_partitions()
            if found != self.settings.shards:
                raise RuntimeError(
                    f"[{STAGE}] {self.vectors_topic} has {found} partitions but MMRAG_SHARDS={self.settings.shards} "
                    "(partition = shard) -> recreate the topic with one partition per shard, or set MMRAG_SHARDS"
                )

    def on_assign(self, partitions: Sequence[tuple[str, int]]) -> None:
        """With Faiss alone: the rows of the assigned partitions' objects, read back from vectors.v1; with Faiss,
        the log's ends, which the next statuses wait for."""
        if isinstance(self.index, VectorLogTable):
            self.index.restore(p for topic, p in partitions if topic == self.settings.topics.embeddings)
        if self.visibility_gate is not None:
            self.visibility_gate.reread_ends()

    def on_commit(self) -> None:
        if isinstance(self.index, VectorLogTable):
            self.index.commit()

    def on_abort(self) -> None:
        if isinstance(self.index, VectorLogTable):
            self.index.abort()

    def handle(self, batch: Sequence[Envelope[EmbeddingBatch]]) -> list[ItemResult]:
        """Applies batches in order (a later item may build on an earlier one of the same object)."""
        results: list[ItemResult] = []
        for env in batch:
            if env.value is None:
                results.append([])  # embeddings.v1 is not compacted: a null value carries nothing to apply
                continue
            try:
                results.append(self._apply(env.value, trace_exemplar(env.headers)))
            except PermanentError as exc:
                results.append(exc)
        return results

    def _apply(self, batch: EmbeddingBatch, exemplar: dict[str, str] | None = None) -> list[Output]:
        """Upserts and deletes ``batch``'s rows; ``exemplar`` (the upload's trace) goes with its freshness."""
        self._check_space(batch)
        plan = plan_update(batch, self.index.rows_of(batch.object_id), self.space, self.settings.shards, now_ms())
        self.index.upsert(plan.upserts)
        self.index.delete(plan.deletes)
        if plan.upserts and batch.event_time_ms:
            freshness_s = max(0, plan.status.indexed_at_ms - batch.event_time_ms) / 1000
            if batch.readers_only:  # a tag change's age when the rows carry it: the revocation bound's index part
                READERS_FRESHNESS.observe(freshness_s, exemplar)
            else:
                metrics.FRESHNESS.labels(STAGE).observe(freshness_s, exemplar)
        outputs = []
        if self.vectors_topic:
            shard = shard_for(batch.object_id, self.settings.shards)
            outputs = vector_outputs(
                self.vectors_topic, plan.upserts, plan.deletes, batch.object_id, shard, self.space.id
            )
        return [*outputs, Output(self.status_topic, batch.object_id, plan.status)]

    def _check_space(self, batch: EmbeddingBatch) -> None:
        if batch.deleted or batch.readers_only:
            return
        expected = self.space.text_model_id if batch.modality == Modality.MODALITY_TEXT else self.space.image_model_id
        if batch.model_id != expected:
            raise PermanentError(
                STAGE,
                batch.object_id,
                f"embedded by {batch.model_id!r}, this index's space {self.space.id} expects {expected!r}",
                "run an updater for that space, or re-index with `mmrag reindex`",
            )
        if not batch.chunks:
            raise PermanentError(STAGE, batch.object_id, "embedding batch without chunks", "fix the embedder")
        has_clip_text = self.space.clip_text_for_text and any(c.clip_text_vector for c in batch.chunks)
        if has_clip_text and batch.clip_model_id != self.space.image_model_id:
            raise PermanentError(
                STAGE,
                batch.object_id,
                f"CLIP text vectors from {batch.clip_model_id!r}, this index's space "
                f"{self.space.id} expects {self.space.image_model_id!r}",
                "give the text embedder the space's CLIP",
            )
