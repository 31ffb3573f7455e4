"""One Faiss shard: its vectors.v1 partition materialized into an in-memory index, searched by the worker.

The partition is assigned directly (no group, nothing committed): the position lives in the snapshots. ``start()``
loads the newest snapshot, reads from its offset to the end offset seen at start and only then returns, so the
worker turns ready with no half-built index; a thread keeps applying new records and snapshots every
``MMRAG_FAISS_SNAPSHOT_INTERVAL_S``. Replicas apply the same records in the same order and hold the same index
(one per half of the joint vector when the space has both: ``mmrag.faiss_halves``).
The shard's keyword index changes with its vectors: each change goes into it just before the vector index, so a
keyword search never misses a row that a vector search finds. Applying appends an HNSW shard's rows to its growing
rows (searched exactly); the same thread moves them into the graph once no record came for half a second, a few at
a time, so that a record is searchable (and its status written) without waiting for the graph.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Gauge

from consumers.faiss_worker.snapshot import SnapshotMark, load_latest, write_snapshot
from mmrag.errors import PermanentError
from mmrag.faiss_halves import HalvesIndex, index_for
from mmrag.faiss_index import FaissSettings
from mmrag.kafka_clients import consumer_config, watermark_offsets
from mmrag.keyword_index import KeywordIndex, KeywordSupport
from mmrag.vector_index import NO_FILTER, Hit, SearchFilter, VectorRow
from mmrag.vector_log import decode_record, from_record

log = logging.getLogger(__name__)
STAGE = "faiss_worker"
APPLIED = Counter("mmrag_vector_records_applied_total", "vectors.v1 records applied to a Faiss shard", ["shard"])
SKIPPED = Counter(
    "mmrag_vector_records_skipped_total", "vectors.v1 records a Faiss shard could not apply", ["shard", "reason"]
)
ROWS = Gauge("mmrag_faiss_rows", "Live rows of a Faiss shard", ["shard"])
SNAPSHOT_SECONDS = Gauge("mmrag_faiss_snapshot_seconds", "Time the last snapshot took", ["shard"])
GROWING = Gauge("mmrag_faiss_growing_rows", "Rows of a Faiss shard searched exactly, not yet in its graph", ["shard"])
_BUILD_TURN_S = 0.05  # graph building between two polls
_BUILD_QUIET_S = 0.5  # no record for this long: the graph takes growing rows (a burst is applied at full speed)
_BUILD_WAIT_MAX_S = 300.0  # rows growing this long are built between polls anyway (a steady trickle is never quiet)


def build_due(now: float, last_records: float, growing_since: float | None) -> bool:
    """Whether the graph takes growing rows between two polls: once the shard is quiet, or once rows have been
    growing for _BUILD_WAIT_MAX_S (records arriving more often than the quiet time would otherwise leave every row
    to the exact search until MMRAG_FAISS_GROWING_MAX)."""
    if growing_since is None:
        return False
    return now - last_records >= _BUILD_QUIET_S or now - growing_since >= _BUILD_WAIT_MAX_S


_BUILD_ROWS = 16  # rows inserted under one hold of the index's lock (~1 ms each at 100k rows): searches take turns


class FaissShard:
    """IndexSearcher and KeywordSearcher over one shard's partition of vectors.v1 (``keywords``: keep a keyword
    index; False leaves keyword searches unanswered)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        shard: int,
        space_id: str,
        dim: int,
        settings: FaissSettings,
        snapshot_dir: Path,
        snapshot_interval_s: float,
        snapshot_max_age_s: float,
        keywords: bool = True,
        text_dim: int = 0,
    ) -> None:
        """``text_dim``: where the space's MiniLM half ends; with both halves the rows are indexed per half
        (``mmrag.faiss_halves``), else (0) in one index."""
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.shard = shard
        self.space_id = space_id
        self.dim = dim
        self.text_dim = text_dim
        self.settings = settings
        self.snapshot_dir = snapshot_dir
        self.snapshot_interval_s = snapshot_interval_s
        self.snapshot_max_age_s = snapshot_max_age_s
        self.index = index_for(dim, text_dim, settings)
        self.keywords = KeywordIndex() if keywords else None
        self.next_offset = 0
        self.target = 0  # the end offset seen at start: ready once read up to it
        self.snapshot_offset = -1
        self.caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure = ""
        self._consumer: Consumer | None = None
        self.on_applied: Callable[[], object] | None = None  # told after records are applied or on catching up
        self._last_records = 0.0  # monotonic time of the last poll that brought records
        self._growing_since: float | None = None  # monotonic time since when the graph lacks rows

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Loads the newest snapshot, then applies the partition up to its end offset as of now (blocks until)."""
        self.index.start()
        self._load_snapshot()
        consumer = Consumer(
            consumer_config(
                self.bootstrap_servers,
                f"{STAGE}-{self.shard}-{uuid.uuid4().hex[:8]}",  # never joins or commits: the assignment is explicit
                **{"enable.partition.eof": True, "fetch.wait.max.ms": 50},
            )
        )
        self._consumer = consumer
        low, high = watermark_offsets(consumer, TopicPartition(self.topic, self.shard), 30)
        if self.next_offset < low:  # what the snapshot lacks was deleted from the log: rebuild from the start
            log.warning("%s: snapshot at %d precedes the log start %d; rebuilding", STAGE, self.next_offset, low)
            self.index, self.next_offset = index_for(self.dim, self.text_dim, self.settings), 0
        if self.keywords is not None:  # the rows of the snapshot, if any: the records after it go in one by one
            self.keywords.rebuild(self.index.shard_rows(self.shard))
        self.target = high
        start = self.next_offset if self.next_offset > 0 else OFFSET_BEGINNING
        consumer.assign([TopicPartition(self.topic, self.shard, start)])
        if self.next_offset >= high:
            self.caught_up.set()
        self._thread = threading.Thread(target=self._run, name=f"faiss-shard-{self.shard}", daemon=True)
        self._thread.start()
        while not self.caught_up.wait(0.5):
            if not self._thread.is_alive():
                raise RuntimeError(f"[{STAGE}] shard {self.shard}: materializing stopped: {self._failure}")
        log.info(
            "%s: shard %d caught up to offset %d (%d rows, %s)",
            STAGE,
            self.shard,
            self.next_offset,
            self.index.count(),
            self.index.kind,
        )

    def close(self, snapshot: bool = True) -> None:
        """Stops applying; takes a last snapshot when anything changed since the previous one."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if snapshot and self.caught_up.is_set() and self.next_offset != self.snapshot_offset:
            self.snapshot()
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def readiness(self) -> tuple[bool, str]:
        """For /readyz: caught up and still applying."""
        alive = self._thread is not None and self._thread.is_alive()
        detail = (
            f"{self.topic}[{self.shard}] at {self.next_offset} (start target {self.target}), "
            f"{self.index.count()} rows, {self.index.kind}"
        )
        if not alive:
            return False, f"not applying {self.topic}[{self.shard}]: {self._failure or 'not started'}"
        return self.caught_up.is_set(), detail

    # -- searcher port -----------------------------------------------------------------------------------------

    def search(
        self, query: np.ndarray, top_k: int, shard: int | None = None, where: SearchFilter = NO_FILTER
    ) -> list[Hit]:
        if shard is not None and shard != self.shard:
            raise ValueError(f"[{STAGE}] asked for shard {shard}, this worker holds shard {self.shard}")
        return self.index.search(query, top_k, None, where)

    def count(self) -> int:
        return self.index.count()

    def shard_rows(self, shard: int) -> Iterator[VectorRow]:
        return self.index.shard_rows(shard)

    def rows_version(self) -> int | None:
        return self.index.rows_version()

    def keyword_support(self) -> KeywordSupport:
        return KeywordSupport.IN_PROCESS if self.keywords is not None else KeywordSupport.NONE

    def keyword_search(
        self, text: str, top_k: int, shard: int | None = None, where: SearchFilter = NO_FILTER
    ) -> list[Hit]:
        if shard is not None and shard != self.shard:
            raise ValueError(f"[{STAGE}] asked for shard {shard}, this worker holds shard {self.shard}")
        if self.keywords is None:
            raise PermanentError(STAGE, f"shard {self.shard}", "keeps no keyword index", "set MMRAG_KEYWORD_REFRESH_S")
        return self.keywords.search(text, top_k, where)

    # -- materializing -----------------------------------------------------------------------------------------

    def snapshot(self) -> None:
        began = time.monotonic()
        offset = self.next_offset
        path = write_snapshot(
            self.snapshot_dir, self.index, SnapshotMark(self.topic, self.shard, offset, self.space_id)
        )
        self.snapshot_offset = offset
        SNAPSHOT_SECONDS.labels(str(self.shard)).set(time.monotonic() - began)
        log.info("%s: shard %d snapshot at offset %d -> %s", STAGE, self.shard, offset, path)

    def _load_snapshot(self) -> None:
        found = load_latest(
            self.snapshot_dir,
            self.topic,
            self.shard,
            self.space_id,
            self.settings,
            int(self.snapshot_max_age_s * 1000),
            per_half=isinstance(self.index, HalvesIndex),
        )
        if found is not None:
            self.index, mark = found
            self.next_offset = self.snapshot_offset = mark.next_offset
            log.info("%s: shard %d loaded snapshot at offset %d", STAGE, self.shard, mark.next_offset)

    def _run(self) -> None:
        last_snapshot = time.monotonic()
        try:
            while not self._stop.is_set():
                self._step()
                due = time.monotonic() - last_snapshot >= self.snapshot_interval_s
                if due and self.caught_up.is_set() and self.next_offset != self.snapshot_offset:
                    self.snapshot()
                    last_snapshot = time.monotonic()
        except Exception as exc:
            self._failure = f"{type(exc).__name__}: {exc}"
            log.exception("%s: shard %d stopped applying %s", STAGE, self.shard, self.topic)

    def _step(self) -> None:
        assert self._consumer is not None
        records: list[Message] = []
        at_end = False
        # the first record ends the wait (a lone record waited librdkafka's whole timeout); what else is fetched
        # already joins it: the updater's statuses wait for this shard to apply
        polled = self._consumer.consume(1, self._poll_timeout())
        for msg in polled + (self._consumer.consume(999, 0) if polled else []):
            err = msg.error()
            if err is None:
                records.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                at_end = True  # the end now, which is at or past the end seen at start
            elif err.fatal():
                raise RuntimeError(f"fatal consumer error on {self.topic}[{self.shard}]: {err}")
            else:
                log.warning("%s: consumer error %s", STAGE, err)
        if records:
            self._apply(records)
            self.next_offset = int(records[-1].offset() or 0) + 1
            self._last_records = time.monotonic()
        if at_end or self.next_offset >= self.target:  # only once what was read is applied
            self.caught_up.set()
        if (records or at_end) and self.on_applied is not None:
            self.on_applied()
        unbuilt = self.index.unbuilt()
        GROWING.labels(str(self.shard)).set(unbuilt)  # also while a burst grows them, not only when built
        if unbuilt == 0:
            self._growing_since = None
        elif self._growing_since is None:
            self._growing_since = time.monotonic()
        if build_due(time.monotonic(), self._last_records, self._growing_since):
            self._build()

    def _poll_timeout(self) -> float:
        """0.2 s, shorter while rows grow: none when the graph may take them now, else until the shard is quiet."""
        if self._growing_since is None:
            return 0.2
        now = time.monotonic()
        if build_due(now, self._last_records, self._growing_since):
            return 0.0
        return min(0.2, max(0.0, _BUILD_QUIET_S - (now - self._last_records)))

    def _build(self) -> None:
        """Moves growing rows into the graph for one turn (see ``build_due``): during a burst the graph waits (the
        growing rows take it, up to MMRAG_FAISS_GROWING_MAX, past which applying builds), so its CPU does not slow
        the burst, and statuses never wait for it."""
        turn_ends = time.monotonic() + _BUILD_TURN_S
        while self.index.unbuilt() and time.monotonic() < turn_ends:
            self.index.build(_BUILD_ROWS)
        GROWING.labels(str(self.shard)).set(self.index.unbuilt())

    def _apply(self, records: Sequence[Message]) -> None:
        """Applies records in offset order: runs of upserts go in together, a tombstone deletes its vector id; each
        change reaches the keyword index first."""
        pending: list[VectorRow] = []
        for msg in records:
            key = msg.key()
            vid = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            value = msg.value()
            if value is None:
                self._upsert(pending)
                pending = []
                if self.keywords is not None:
                    self.keywords.apply(deletes=[vid])
                self.index.delete([vid])
            else:
                row = self._decoded(value if isinstance(value, bytes) else value.encode(), int(msg.offset() or 0))
                if row is not None:
                    pending.append(row)
        self._upsert(pending)
        APPLIED.labels(str(self.shard)).inc(len(records))
        ROWS.labels(str(self.shard)).set(self.index.count())

    def _upsert(self, rows: list[VectorRow]) -> None:
        """Rows of another size than the space's are skipped (counted, logged) before either index sees them."""
        fitting = []
        for row in rows:
            if np.asarray(row.vector).size == self.dim:
                fitting.append(row)
            else:
                SKIPPED.labels(str(self.shard), "dimension").inc()
                log.error(
                    "%s: %s: vector %s has %d dims, the space %s has %d: skipped (index it with that space)",
                    STAGE,
                    row.object_id,
                    row.vector_id,
                    np.asarray(row.vector).size,
                    self.space_id,
                    self.dim,
                )
        if self.keywords is not None:
            self.keywords.apply(upserts=fitting)
        self.index.upsert(fitting)

    def _decoded(self, value: bytes, offset: int) -> VectorRow | None:
        try:
            record = decode_record(value)
        except DecodeError as exc:
            SKIPPED.labels(str(self.shard), "undecodable").inc()
            log.error("%s: %s[%d]@%d is not a VectorRecord (%s): skipped", STAGE, self.topic, self.shard, offset, exc)
            return None
        if record.space_id != self.space_id:
            SKIPPED.labels(str(self.shard), "other-space").inc()
            log.warning(
                "%s: %s@%d is of space %s, not %s", STAGE, record.object_id, offset, record.space_id, self.space_id
            )
            return None
        return from_record(record)
