"""The Ask answer cache: a question close enough to one answered before (cosine of the query vectors >= a threshold)
in the same scope (embedding space, filters, top_k, answer limits) gets that answer again, as long as none of its
sources changed in the index since.

Freshness follows index-status.v1 (through the status view): every status that changed the index (all but SKIPPED)
updates ``IndexedObjects``; a new one for an object drops every entry that has it among its sources, and a lookup
checks each source against the newest status known here, so an entry that slipped past (another replica stored it,
or the status raced the store) is never served. An answer is stored only when each source is the version the index
holds, indexed before the Ask began (one with a source whose status has not been read here yet waits for it, in
process, up to ``PENDING_S``: Search finds rows before their INDEXED status is out); degraded, "not found" and uncited
answers, and answers from a partial, keyword or cached retrieval are never stored. Entries live in a store: in
process (``MemoryAnswerStore``) or in Redis (``query_service.answer_store_redis``) so replicas share them.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
from prometheus_client import Counter

from mmrag.messages import now_ms
from mmrag.pb.events_pb2 import IndexStatus
from mmrag.pb.query_pb2 import AskFinal, AskSources
from query_service.answer_entry import AnswerStoreError, CachedAnswer
from query_service.caches import CACHE_REQUESTS, digest
from query_service.index_changes import IndexedObjects, IndexedVersion

if TYPE_CHECKING:
    from query_service.settings import QueryServiceSettings

log = logging.getLogger(__name__)
PENDING_S = 30  # how long an answer waits for its sources' statuses to be read here
PENDING_MAX = 256  # answers waiting at most (the oldest is dropped first)
INVALIDATIONS = Counter(
    "mmrag_answer_cache_invalidations_total",
    "Answer cache entries dropped: a source changed (on its index status, or found on lookup), or the TTL passed",
    ["reason"],
)
STORES = Counter(
    "mmrag_answer_cache_stores_total",
    "Answers offered to the answer cache by outcome (a deferred one ends stored, source-changed or expired)",
    ["outcome"],
)


class AnswerStore(Protocol):
    """Where entries live. Methods raise AnswerStoreError when the store fails."""

    def candidates(self, scope: str) -> list[tuple[str, np.ndarray]]:
        """(entry id, unit query vector) of the entries of ``scope``."""

    def get(self, scope: str, entry_id: str) -> CachedAnswer | None: ...

    def put(self, entry: CachedAnswer, ttl_s: float) -> None: ...

    def drop(self, entry: CachedAnswer) -> bool:
        """Removes the entry; True when this call removed it (so one replica counts an invalidation)."""

    def citing(self, object_id: str) -> list[CachedAnswer]:
        """The entries with ``object_id`` among their sources."""


@dataclass
class MemoryAnswerStore:
    """In process: at most ``size`` entries, least recently used dropped first."""

    size: int
    _entries: OrderedDict[str, CachedAnswer] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def candidates(self, scope: str) -> list[tuple[str, np.ndarray]]:
        with self._lock:
            return [(k, e.vector) for k, e in self._entries.items() if e.scope == scope]

    def get(self, scope: str, entry_id: str) -> CachedAnswer | None:
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is not None:
                self._entries.move_to_end(entry_id)
            return entry

    def put(self, entry: CachedAnswer, ttl_s: float) -> None:
        with self._lock:
            self._entries[entry.id] = entry
            self._entries.move_to_end(entry.id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, entry: CachedAnswer) -> bool:
        with self._lock:
            return self._entries.pop(entry.id, None) is not None

    def citing(self, object_id: str) -> list[CachedAnswer]:
        with self._lock:
            return [e for e in self._entries.values() if object_id in e.objects]


def unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).ravel()
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


class AnswerCache:
    """Looks answers up by similarity within a scope, stores the cacheable ones, drops them when a source changes.
    ``ready``: whether ``objects`` has read index-status.v1 up to its end (before that nothing is served, stored or
    dropped: a source unknown yet is not a changed one). ``clock_ms``: wall-clock ms (entries are shared)."""

    def __init__(
        self,
        store: AnswerStore,
        similarity: float,
        ttl_s: float,
        objects: IndexedObjects | None = None,
        ready: Callable[[], bool] = lambda: True,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.similarity = similarity
        self.ttl_s = ttl_s
        self.objects = objects or IndexedObjects()
        self.ready = ready
        self.clock_ms = clock_ms
        self._pending: list[_Pending] = []  # answers waiting for their sources' statuses, oldest first
        self._pending_lock = threading.Lock()  # observing a status and judging the waiting answers are one step

    @staticmethod
    def scope_key(*parts: object) -> str:
        """The scope of an answer: everything besides the question it depends on (space, filters, limits)."""
        return digest(repr(parts).encode())

    def lookup(self, vector: np.ndarray, scope: str) -> CachedAnswer | None:
        """The closest entry of ``scope`` at or above the threshold whose sources are all unchanged, else None."""
        found = None
        try:
            found = self._lookup(unit(vector), scope) if self.ready() else None
        except AnswerStoreError as exc:
            log.warning("answer cache lookup failed, answering without it: %s", exc)
            CACHE_REQUESTS.labels("answer", "error").inc()
            return None
        CACHE_REQUESTS.labels("answer", "miss" if found is None else "hit").inc()
        return found

    def _lookup(self, query: np.ndarray, scope: str) -> CachedAnswer | None:
        candidates = [(k, v) for k, v in self.store.candidates(scope) if v.shape == query.shape]
        if not candidates:
            return None
        scores = np.stack([v for _, v in candidates]) @ query
        best = int(np.argmax(scores))
        if float(scores[best]) < self.similarity:
            return None
        entry = self.store.get(scope, candidates[best][0])
        if entry is None:
            return None
        if self.clock_ms() - entry.stored_at_ms > self.ttl_s * 1000:
            if self.store.drop(entry):
                INVALIDATIONS.labels("ttl").inc()
            return None
        verdict = self._verdict(entry)
        if verdict == "changed" and self.store.drop(entry):
            INVALIDATIONS.labels("changed-on-lookup").inc()
        return entry if verdict == "current" else None

    def _verdict(self, entry: CachedAnswer) -> str:
        """current: every source as the entry has it; changed: one was indexed again or removed since; unknown:
        this replica has not read that far (it never drops what it cannot judge)."""
        for oid, (version, indexed_at) in entry.objects.items():
            now = self.objects.get(oid)
            if now is None or now.indexed_at_ms < indexed_at:
                return "unknown"
            if (now.version, now.indexed_at_ms, now.live) != (version, indexed_at, True):
                return "changed"
        return "current"

    def store_answer(self, vector: np.ndarray, scope: str, sources: AskSources, final: AskFinal, asked_ms: int) -> bool:
        """Stores an answer (the caller has checked ``cacheable``) when each source is the version the index holds
        and was indexed before the Ask began (``asked_ms``); True when stored now. An answer with a source whose
        status this replica has not read yet (Search finds an object's rows before its INDEXED status is out) waits
        for it here, in process, up to ``PENDING_S``, and is stored when its statuses arrive and agree."""
        answered = _Pending(scope, unit(vector), self.clock_ms(), asked_ms, sources, final)
        with self._pending_lock:
            self._expire_pending()
            verdict, objects = self._judge(answered)
            if verdict == "wait":
                self._pending.append(answered)
                if len(self._pending) > PENDING_MAX:
                    self._pending.pop(0)
                    STORES.labels("expired").inc()
                STORES.labels("deferred").inc()
                return False
        if verdict == "no":
            STORES.labels("source-changed").inc()
            return False
        return self._put(answered, objects)

    def _judge(self, answered: _Pending) -> tuple[str, dict[str, tuple[str, int]]]:
        """ok: every source is the version the index holds, indexed before the Ask began; no: one is not and never
        will be; wait: one's status has not been read here yet (unknown, or another version indexed before the Ask
        began: the retrieved one's status may be on its way). With ok, each source's (version, indexed_at_ms)."""
        if not self.ready():
            return "no", {}
        verdict, objects = "ok", {}
        for s in answered.sources.sources:
            now = self.objects.get(s.object_id)
            if now is None or now.version != s.version:
                verdict = "wait"
            elif not now.live:
                return "no", {}
            else:
                objects[s.object_id] = (now.version, now.indexed_at_ms)
            if now is not None and now.indexed_at_ms > answered.asked_ms:
                return "no", {}
        return verdict, objects

    def _put(self, answered: _Pending, objects: dict[str, tuple[str, int]]) -> bool:
        entry = CachedAnswer(
            answered.scope,
            answered.vector,
            answered.at_ms,
            objects,
            answered.sources.SerializeToString(),
            answered.final.SerializeToString(),
        )
        try:
            self.store.put(entry, self.ttl_s)
        except AnswerStoreError as exc:
            log.warning("answer cache store failed: %s", exc)
            STORES.labels("error").inc()
            return False
        STORES.labels("stored").inc()
        return True

    def _expire_pending(self) -> None:
        """Under ``_pending_lock``: drops the waiting answers older than ``PENDING_S``."""
        if not self._pending:
            return
        oldest = self.clock_ms() - PENDING_S * 1000
        kept = [p for p in self._pending if p.at_ms >= oldest]
        STORES.labels("expired").inc(len(self._pending) - len(kept))
        self._pending = kept

    def _settle_pending(self, object_id: str) -> list[tuple[_Pending, dict[str, tuple[str, int]]]]:
        """Under ``_pending_lock``, after a status of ``object_id``: the waiting answers now to be stored (those
        now refused are counted and dropped)."""
        self._expire_pending()
        settled, kept = [], []
        for answered in self._pending:
            if not answered.has_source(object_id):
                kept.append(answered)
                continue
            verdict, objects = self._judge(answered)
            if verdict == "ok":
                settled.append((answered, objects))
            elif verdict == "wait":
                kept.append(answered)
            else:
                STORES.labels("source-changed").inc()
        self._pending = kept
        return settled

    def on_index_status(self, status: IndexStatus) -> None:
        """For the status view's thread: a status that changed the index drops the entries answered from before, and
        stores the waiting answers whose sources it settles."""
        with self._pending_lock:
            changed = self.objects.observe(status)
            if changed is None or not self.ready():
                return
            settled = self._settle_pending(status.object_id)
        for answered, objects in settled:
            self._put(answered, objects)
        try:
            for entry in self.store.citing(status.object_id):
                if _newer(changed, entry.objects.get(status.object_id)) and self.store.drop(entry):
                    INVALIDATIONS.labels("changed").inc()
        except AnswerStoreError as exc:
            log.warning(
                "answer cache: dropping the entries of %s failed (lookups still check): %s", status.object_id, exc
            )


@dataclass(frozen=True)
class _Pending:
    """An answer offered to the cache: what it was asked in and answered from."""

    scope: str
    vector: np.ndarray
    at_ms: int  # when it was offered (the entry's age counts from here)
    asked_ms: int
    sources: AskSources
    final: AskFinal

    def has_source(self, object_id: str) -> bool:
        return any(s.object_id == object_id for s in self.sources.sources)


def _newer(change: IndexedVersion, answered_from: tuple[str, int] | None) -> bool:
    """Whether ``change`` happened after the state an entry was answered from (a replica replaying older statuses
    drops nothing)."""
    if answered_from is None:
        return False
    version, indexed_at = answered_from
    return change.indexed_at_ms > indexed_at or (change.indexed_at_ms == indexed_at and change.version != version)


def cacheable(sources: AskSources, final: AskFinal) -> bool:
    """An answer worth serving again: generated and grounded, citing a source, from a complete fresh retrieval."""
    retrieval_whole = not (sources.partial or sources.from_cache or sources.degraded)
    return retrieval_whole and not final.is_degraded and bool(final.citations) and bool(sources.sources)


def open_answer_cache(
    settings: QueryServiceSettings, ready: Callable[[], bool], objects: IndexedObjects | None = None
) -> AnswerCache | None:
    """The answer cache the settings ask for: in Redis (``cache_redis_url``, keys under the topic prefix) or in
    process; None when ``answer_cache_size`` is 0."""
    s = settings
    if s.answer_cache_size <= 0:
        return None
    store: AnswerStore = MemoryAnswerStore(s.answer_cache_size)
    if s.cache_redis_url:
        from query_service.answer_store_redis import RedisAnswerStore  # noqa: PLC0415 - redis only when asked for

        store = RedisAnswerStore(s.cache_redis_url, f"mmrag:{s.topic_prefix}answers:", s.answer_cache_size)
    return AnswerCache(store, s.answer_cache_similarity, s.answer_cache_ttl_s, objects, ready)
