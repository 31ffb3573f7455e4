"""Faiss adapter of the vector index ports: an in-memory ``IndexIDMap2`` over flat, HNSW or IVF storage.

Flat (exact) below ``MMRAG_FAISS_ANN_THRESHOLD`` live rows, then the approximate kind ``MMRAG_FAISS_ANN`` (hnsw or
ivf), rebuilt from the live vectors when the threshold is crossed. Internal ids are a counter assigned in apply
order, so replicas applying the same records build the same index. A delete or an overwrite only marks the old id
dead (HNSW cannot remove, flat removal moves the whole array): searches exclude dead ids with an ``IDSelector`` and
the index is rebuilt from its live rows once dead ones exceed ``MMRAG_FAISS_COMPACT_FRACTION`` of it.
Growing rows (HNSW only): an insert into the graph costs ~1 ms at 100k rows on one thread and grows with it, so
applying a row appends it to a flat index of rows not yet in the graph (the growing rows, searched exactly beside
the graph: Milvus' growing segments), and ``build`` moves them into the graph later, in internal-id order on one
thread, so every replica ends with the same graph whenever it builds. Applying stays O(1) per row; more than
``MMRAG_FAISS_GROWING_MAX`` growing rows make ``upsert`` build first (back-pressure). A rebuild (the threshold, or
compaction) stages every live row as growing in a new empty graph instead of building it while the writer waits.
Thread-safe: one lock around every call (searches are short; the materializing thread takes turns with them), except
a rebuild's construction: the new index is built beside the old one, which keeps answering searches, and swapped in
under the lock (writers are serialized by a lock of their own, so nothing changes the rows meanwhile).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

import faiss
import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mmrag.errors import PermanentError
from mmrag.vector_index import NO_FILTER, Hit, ReaderSets, SearchFilter, VectorRow

STAGE = "faiss"
_faiss: Any = faiss  # the bundled stubs lack parts of the SWIG API (HNSW search parameters, IVF's nprobe)
Kind = Literal["flat", "hnsw", "ivf"]


_CACHED_FILTERS = 64


class FaissSettings(BaseSettings):
    """How a Faiss shard indexes its rows (every replica of a shard needs the same values to answer alike)."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", frozen=True, extra="ignore")

    faiss_ann: Literal["hnsw", "ivf"] = Field(default="hnsw", description="the approximate kind above the threshold")
    faiss_ann_threshold: int = Field(default=20000, ge=1, description="live rows from which a shard is approximate")
    faiss_hnsw_m: int = 32
    faiss_hnsw_ef_construction: int = 64
    faiss_hnsw_ef_search: int = Field(default=128, description="HNSW search breadth (at least top_k)")
    faiss_ivf_nlist: int = Field(default=0, ge=0, description="IVF lists; 0 = sqrt(rows) when it is built")
    faiss_ivf_nprobe: int = Field(default=32, ge=1, description="IVF lists visited per search")
    faiss_exact_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="a filter (a caller's permissions) admitting at most this share of the live rows is searched "
        "exactly over those rows, not by the approximate index (whose recall falls with a selective filter)",
    )
    faiss_compact_fraction: float = Field(default=0.25, gt=0, le=1, description="dead share that triggers a rebuild")
    faiss_growing_max: int = Field(
        default=200_000,
        ge=0,
        description="applied rows of an HNSW shard searched exactly until they are in its graph; past it, applying "
        "builds the graph first (0: every row goes into the graph as it is applied)",
    )
    faiss_threads: int = Field(
        default=1,
        ge=0,
        description="OpenMP threads of Faiss' searches (the searching thread's); 0 = every core. One query at a "
        "time gains nothing from more: idle threads spin, a search took 31 CPU-ms instead of 12 (bench.query in "
        "process)",
    )
    faiss_build_threads: int = Field(
        default=0, ge=0, description="OpenMP threads while a shard is (re)built: IVF training and adds; 0 = every core"
    )
    faiss_gpu: Literal["auto", "off"] = Field(
        default="auto", description="search flat shards on a CUDA device when a faiss GPU build finds one"
    )


def _threads(setting: int) -> int:
    """A thread-count setting as a count: 0 = every core."""
    return setting or os.cpu_count() or 1


@contextmanager
def omp_threads(n: int) -> Iterator[None]:
    """Faiss' OpenMP threads are ``n`` within the block, then what they were (libgomp keeps the setting per thread:
    this thread's parallel regions only)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@dataclass
class _Columns:
    """Per internal id: live, shard and halves, as arrays the search filters become bitmaps of."""

    live: np.ndarray
    shard: np.ndarray
    text: np.ndarray
    image: np.ndarray
    acl: np.ndarray  # the row's reader set, as its number in ``ReaderSets``

    @classmethod
    def empty(cls, capacity: int = 1024) -> _Columns:
        return cls(*(np.zeros(capacity, dtype=t) for t in (bool, np.int32, bool, bool, np.int32)))

    def ensure(self, capacity: int) -> None:
        if capacity <= len(self.live):
            return
        size = max(capacity, 2 * len(self.live))
        for name in ("live", "shard", "text", "image", "acl"):
            old = getattr(self, name)
            grown = np.zeros(size, dtype=old.dtype)
            grown[: len(old)] = old
            setattr(self, name, grown)


@dataclass(frozen=True)
class _Eligible:
    """The rows a filter admits: a selector for Faiss (None = every row, False = none), and how many they are."""

    selector: Any
    count: int
    mask: np.ndarray | None = None


class IndexState(NamedTuple):
    """What a snapshot stores: the index bytes, the payload rows in internal-id order, the counters, and the growing
    rows' flat index (bytes) when the graph lacks some rows."""

    raw: bytes
    rows: list[VectorRow]
    meta: dict[str, Any]
    growing: bytes | None


class FaissIndex:
    """Writer and searcher over one in-memory Faiss index (any number of shards; a worker holds one)."""

    def __init__(self, dim: int, settings: FaissSettings | None = None) -> None:
        self.dim = dim
        self.settings = settings or FaissSettings()
        self.kind: Kind = "flat"
        self._lock = threading.RLock()  # the state: searches, and a writer's changes
        self._writing = threading.Lock()  # one writer at a time: a rebuild reads the state without ``_lock``
        self._index: Any = self._empty("flat", None)
        self._rows: dict[int, VectorRow] = {}  # payload without the vector (Faiss holds it)
        self._ids: dict[str, int] = {}
        self._by_object: dict[str, set[int]] = {}
        self._cols = _Columns.empty()
        self._readers = ReaderSets()
        self._next_id = 0
        self._dead = 0
        self._growing: Any = None  # HNSW only: IDMap2 over a flat index holding the ids from _built on
        self._built = 0  # HNSW: internal ids below this are in the graph
        self._staged = 0  # HNSW: ids below this were staged by a rebuild (not held against the growing limit)
        self._version = 0  # bumps on every change: cached selector bitmaps are for one version
        self._bitmaps: dict[tuple[Any, ...], _Eligible] = {}
        self._exact: dict[tuple[Any, ...], tuple[np.ndarray, Any]] = {}  # visible ids and a flat index of them
        self._gpu: Any = None  # a GPU copy of a flat index, made again after changes

    def start(self) -> None:
        """Nothing to connect (the index lives in this process); applies MMRAG_FAISS_THREADS to the calling thread
        (OpenMP settings are per thread: call it from the thread that searches, as the retrieval worker does)."""
        faiss.omp_set_num_threads(_threads(self.settings.faiss_threads))

    # -- writer side ---------------------------------------------------------------------------------------------

    def upsert(self, rows: Sequence[VectorRow]) -> None:
        """Adds rows in order; an existing vector_id is overwritten (its old vector marked dead)."""
        if not rows:
            return
        vectors = np.stack([self._checked(r) for r in rows])
        with self._writing:
            done = 0
            while done < len(rows):
                with self._lock:
                    done, rebuild = self._upsert_until_rebuild(rows, vectors, done)
                    self._changed()
                if rebuild:
                    self._rebuild(self._wanted())
            while self._growing is not None and self._over_growing_limit():
                self.build(1024)

    def _upsert_until_rebuild(self, rows: Sequence[VectorRow], vectors: np.ndarray, start: int) -> tuple[int, bool]:
        """Applies ``rows[start:]`` until a rebuild is due; returns how far it got and whether one is due."""
        pending: dict[int, int] = {}  # position in ``rows`` -> internal id, not yet in Faiss: added together
        for position in range(start, len(rows)):
            row = rows[position]
            self._forget(row.vector_id)
            pending[position] = self._next_id
            self._remember(self._next_id, row)
            if self._rebuild_due(self._next_id):
                self._add_pending(vectors, pending)
                return position + 1, True
        self._add_pending(vectors, pending)
        return len(rows), False

    def delete(self, vector_ids: Sequence[str]) -> None:
        with self._writing:
            for vid in vector_ids:
                with self._lock:
                    rebuild = self._forget(vid) and self._rebuild_due(self._next_id)
                    self._changed()
                if rebuild:
                    self._rebuild(self._wanted())

    def rows_of(self, object_id: str) -> list[VectorRow]:
        with self._lock:
            ids = sorted(self._by_object.get(object_id, ()))
            vectors = self._vectors(np.array(ids, dtype=np.int64))
            return [replace(self._rows[i], vector=v) for i, v in zip(ids, vectors, strict=True)]

    def holds(self, vector_id: str) -> bool:
        with self._lock:
            return vector_id in self._ids

    def held_ids(self) -> set[str]:
        with self._lock:
            return set(self._ids)

    def inner_products(self, vector_ids: Sequence[str], query: np.ndarray) -> np.ndarray:
        """Each row's inner product with ``query`` (0 for an id this index does not hold), in order."""
        with self._lock:
            internal = [self._ids.get(vid, -1) for vid in vector_ids]
            known = np.array([i for i in internal if i >= 0], dtype=np.int64)
            scores = np.zeros(len(vector_ids), dtype=np.float32)
            if len(known):
                found = self._vectors(known) @ np.asarray(query, dtype=np.float32).reshape(-1)
                scores[[n for n, i in enumerate(internal) if i >= 0]] = found
            return scores

    def _over_growing_limit(self) -> bool:
        return self._next_id - max(self._built, self._staged) > self.settings.faiss_growing_max

    def unbuilt(self) -> int:
        """Rows applied and not yet in the HNSW graph (searched exactly meanwhile)."""
        return self._next_id - self._built if self._growing is not None else 0

    def build(self, max_rows: int | None = None) -> int:
        """Moves up to ``max_rows`` growing rows (all: None) into the HNSW graph, in internal-id order, one at a
        time on one thread (a batch is inserted level by level and threads race on the links, so the graph would
        depend on batch boundaries and scheduling; this way replicas, and a worker restarted from a snapshot, that
        applied the same records hold the same graph; a point's level is drawn from a generator seeded by its id, as
        Faiss' own generator is not in a snapshot). Dead rows go in too, as in the graph they were applied to.
        Returns the rows still growing."""
        with self._lock:
            if self._growing is None:
                return 0
            end = self._next_id if max_rows is None else min(self._next_id, self._built + max_rows)
            if end > self._built:
                ids = np.arange(self._built, end, dtype=np.int64)
                vectors = self._growing.reconstruct_batch(ids)
                hnsw = _faiss.downcast_index(self._index.index).hnsw
                with omp_threads(1):
                    for i in range(len(ids)):
                        hnsw.rng = _faiss.RandomGenerator(int(ids[i]))  # its level: by its id, not by what came before
                        self._index.add_with_ids(vectors[i : i + 1], ids[i : i + 1])
                self._built = end
            left = self._next_id - self._built
            if left == 0:
                self._growing = None
            elif self._growing.ntotal > max(4096, 2 * left):  # mostly built: keep only the rows still growing
                ids = np.arange(self._built, self._next_id, dtype=np.int64)
                growing = self._empty("flat", None)
                growing.add_with_ids(self._growing.reconstruct_batch(ids), ids)
                self._growing = growing
            return left

    # -- searcher side -------------------------------------------------------------------------------------------

    def count(self) -> int:
        with self._lock:
            return len(self._rows)

    def rows_version(self) -> int | None:
        return self._version

    def shard_rows(self, shard: int) -> Iterator[VectorRow]:
        """The payload rows of ``shard`` (vectors empty), as they were when called."""
        with self._lock:
            rows = [r for r in self._rows.values() if r.shard == shard]
        yield from rows

    def search(
        self, query: np.ndarray, top_k: int, shard: int | None = None, where: SearchFilter = NO_FILTER
    ) -> list[Hit]:
        q = checked_query(query, self.dim).reshape(1, -1)
        with self._lock:
            k = min(top_k, len(self._rows))
            eligible = self._selector(shard, where)
            if k <= 0 or eligible.selector is False:
                return []
            if self._exact_due(eligible):
                scores, ids = self._exact_search(q, k, (shard, where), eligible)
            else:
                scores, ids = self._run_search(q, k, eligible.selector)
            hits = [Hit(self._rows[int(i)], float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
        return sorted(hits, key=lambda h: (-h.score, h.row.vector_id))

    # -- state ---------------------------------------------------------------------------------------------------

    def _checked(self, row: VectorRow) -> np.ndarray:
        return checked_vector(row, self.dim)

    def _remember(self, internal: int, row: VectorRow) -> None:
        self._next_id = max(self._next_id, internal + 1)
        self._cols.ensure(self._next_id)
        self._rows[internal] = replace(row, vector=np.empty(0, dtype=np.float32))
        self._ids[row.vector_id] = internal
        self._by_object.setdefault(row.object_id, set()).add(internal)
        c = self._cols
        c.live[internal], c.shard[internal], c.text[internal], c.image[internal], c.acl[internal] = (
            True,
            row.shard,
            row.has_text,
            row.has_image,
            self._readers.number(row.readers),
        )

    def _forget(self, vector_id: str) -> bool:
        internal = self._ids.pop(vector_id, None)
        if internal is None:
            return False
        row = self._rows.pop(internal)
        siblings = self._by_object[row.object_id]
        siblings.discard(internal)
        if not siblings:
            del self._by_object[row.object_id]
        self._cols.live[internal] = False
        self._dead += 1
        return True

    def _changed(self) -> None:
        self._version += 1
        self._bitmaps.clear()
        self._exact.clear()
        self._gpu = None

    def _add_pending(self, vectors: np.ndarray, pending: dict[int, int]) -> None:
        if pending:
            self._add(vectors[list(pending)], np.fromiter(pending.values(), dtype=np.int64, count=len(pending)))

    def _wanted(self) -> Kind:
        return self.settings.faiss_ann if len(self._rows) >= self.settings.faiss_ann_threshold else self.kind

    def _rebuild_due(self, ntotal: int) -> bool:
        """Decided after every record, never per batch: replicas reading the same records in other poll batches
        rebuild at the same record and so hold the same index (an IVF trained on the same rows)."""
        return self._wanted() != self.kind or self._dead > self.settings.faiss_compact_fraction * max(1, ntotal)

    def _rebuild(self, kind: Kind) -> None:
        """A new index of ``kind`` over the live rows, renumbered 0..n-1 in their old order (deterministic). Built
        in a fresh instance while this one keeps answering searches; its state is swapped in under the lock. Only a
        writer (holding ``_writing``) calls it: the rows cannot change while it builds."""
        with self._lock:
            old_ids = np.array(sorted(self._rows), dtype=np.int64)
            vectors = self._vectors(old_ids)
            rows = [self._rows[i] for i in old_ids.tolist()]
        new = FaissIndex(self.dim, self.settings)
        new._readers = self._readers  # numbers only grow: the old index's columns stay valid meanwhile
        new._cols = _Columns.empty(max(1024, len(rows)))
        for internal, row in enumerate(rows):
            new._remember(internal, row)
        new.kind = "flat" if kind == "ivf" and not rows else kind  # nothing to train lists on: flat until the next
        with omp_threads(_threads(self.settings.faiss_build_threads)):
            new._index = new._empty(new.kind, vectors)
            new._add(vectors, np.arange(len(rows), dtype=np.int64))
        new._staged = len(rows)
        with self._lock:
            self._index, self.kind, self._cols = new._index, new.kind, new._cols
            self._rows, self._ids, self._by_object = new._rows, new._ids, new._by_object
            self._next_id, self._dead = len(rows), 0
            self._growing, self._built, self._staged = new._growing, new._built, new._staged
            self._changed()

    def _add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Adds to the index; on HNSW to the growing rows (``build`` moves them into the graph), or into the graph
        at once when no row may grow (``MMRAG_FAISS_GROWING_MAX=0``)."""
        if self.kind != "hnsw":
            self._index.add_with_ids(vectors, ids)
            return
        if self._growing is None:
            self._growing = self._empty("flat", None)
        self._growing.add_with_ids(vectors, ids)
        if self.settings.faiss_growing_max == 0 and self._staged <= self._built:
            self.build()

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        """The vectors of internal ids, from the graph or the growing rows."""
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        if not len(ids):
            return out
        if self._growing is None:
            return np.asarray(self._index.reconstruct_batch(ids), dtype=np.float32).reshape(len(ids), self.dim)
        old = ids < self._built
        if old.any():
            out[old] = self._index.reconstruct_batch(ids[old])
        if not old.all():
            out[~old] = self._growing.reconstruct_batch(ids[~old])
        return out

    def _empty(self, kind: Kind, training: np.ndarray | None) -> Any:
        s = self.settings
        base: Any
        if kind == "hnsw":
            base = faiss.IndexHNSWFlat(self.dim, s.faiss_hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = s.faiss_hnsw_ef_construction
        elif kind == "ivf":
            assert training is not None, "an IVF index is built from rows"
            n = len(training)
            nlist = min(s.faiss_ivf_nlist or max(1, int(math.sqrt(n))), max(1, n // 39))  # k-means: >= 39 per list
            base = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            base.make_direct_map()  # rows_of and rebuilds reconstruct vectors
            base.train(training[:: max(1, n // (64 * nlist))])  # an even sample of ~64 rows per list: deterministic
        else:
            base = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(base)

    # -- search helpers ------------------------------------------------------------------------------------------

    def _selector(self, shard: int | None, where: SearchFilter) -> _Eligible:
        """The eligible internal ids: a selector (None: every id; False: none; else an IDSelectorBitmap) and their
        count, cached per filter until the index changes."""
        n = self._next_id
        if where.object_ids is not None:
            ids = [i for o in where.object_ids for i in self._by_object.get(o, ())]
            mask = np.zeros(n, dtype=bool)
            mask[ids] = True
            mask &= self._mask(shard, where)[:n]
            return _Eligible(self._bitmap(mask), int(mask.sum()), mask) if mask.any() else _Eligible(False, 0)
        key = (shard, where)
        if key not in self._bitmaps:
            if len(self._bitmaps) >= _CACHED_FILTERS:  # distinct filters (time ranges) must not grow it unbounded
                self._bitmaps.clear()
                self._exact.clear()
            mask = self._mask(shard, where)[:n]
            count = int(mask.sum())
            everything = self._dead == 0 and count == n
            self._bitmaps[key] = (
                _Eligible(None, count) if everything else _Eligible(self._bitmap(mask) if count else False, count, mask)
            )
        return self._bitmaps[key]

    def _exact_due(self, eligible: _Eligible) -> bool:
        """An approximate index searched with a selective filter loses recall (HNSW's beam and IVF's probed lists
        hold few eligible rows) and time: the visible rows are searched exactly when they are at most
        ``MMRAG_FAISS_EXACT_SHARE`` of the live rows (the flat-search cut-off of Milvus and Weaviate)."""
        return (
            self.kind != "flat"
            and eligible.mask is not None
            and eligible.count <= self.settings.faiss_exact_share * len(self._rows)
        )

    def _exact_search(
        self, q: np.ndarray, k: int, key: tuple[Any, ...], eligible: _Eligible
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inner products with every eligible row, by a flat index of their vectors (made once per filter until the
        index changes; an object-id filter's is not kept). Faiss' flat search, not numpy: it runs on the searching
        thread's MMRAG_FAISS_THREADS, where numpy's BLAS threads spun on the loaded box (5,000 rows: 1 ms on one
        thread, 4-12 ms on BLAS threads)."""
        found = self._exact.get(key)
        if found is None:
            assert eligible.mask is not None
            ids = np.flatnonzero(eligible.mask).astype(np.int64)
            flat = faiss.IndexFlatIP(self.dim)
            flat.add(self._vectors(ids))
            found = (ids, flat)
            if key[1].object_ids is None:
                self._exact[key] = found
        ids, flat = found
        scores, positions = flat.search(q, min(k, len(ids)))
        return scores, np.where(positions >= 0, ids[np.maximum(positions, 0)], -1)

    def _mask(self, shard: int | None, where: SearchFilter) -> np.ndarray:
        c = self._cols
        mask = c.live.copy()
        if shard is not None:
            mask &= c.shard == shard
        if where.has_text is not None:
            mask &= c.text == where.has_text
        if where.has_image is not None:
            mask &= c.image == where.has_image
        if where.readers is not None:
            mask &= self._readers.visible(where.readers)[c.acl[: len(mask)]] if self._readers.sets else False
        if where.on_payload:
            mask &= self._payload_mask(where, len(mask))
        return mask

    def _payload_mask(self, where: SearchFilter, size: int) -> np.ndarray:
        """The payload conditions (bucket, key prefix, content type, event time) by the filter's own predicate;
        cached with the selector until the next change."""
        mask = np.zeros(size, dtype=bool)
        for object_id, internals in self._by_object.items():
            if where.admits_object(object_id):
                for i in internals:
                    mask[i] = where.admits_payload(self._rows[i])
        return mask

    @staticmethod
    def _bitmap(mask: np.ndarray) -> Any:
        packed = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(packed))
        selector.packed = packed  # type: ignore[attr-defined]  # keeps the bits alive as long as the selector
        return selector

    def _params(self, selector: Any, k: int) -> Any:
        extra: dict[str, Any] = {} if selector is None else {"sel": selector}
        if self.kind == "hnsw":
            return _faiss.SearchParametersHNSW(efSearch=max(k, self.settings.faiss_hnsw_ef_search), **extra)
        if self.kind == "ivf":
            return _faiss.SearchParametersIVF(nprobe=self.settings.faiss_ivf_nprobe, **extra)
        return faiss.SearchParameters(**extra) if extra else None

    def _run_search(self, q: np.ndarray, k: int, selector: Any) -> tuple[np.ndarray, np.ndarray]:
        """On the CPU index (and its growing rows), or on a GPU copy of a flat one searched without a selector (GPU
        flat takes none)."""
        if self._growing is not None:
            return self._search_growing(q, k, selector)
        if selector is not None or self.kind != "flat" or not gpu_available(self.settings):
            scores, ids = self._index.search(q, k, params=self._params(selector, k))
            return scores, ids
        if self._gpu is None:  # the flat storage only; positions map to ids through the IDMap's table
            base = faiss.index_cpu_to_gpu(_gpu_resources(), 0, faiss.downcast_index(self._index.index))
            self._gpu = (base, faiss.vector_to_array(self._index.id_map))
        base, id_map = self._gpu
        scores, positions = base.search(q, k)
        return scores, np.where(positions >= 0, id_map[np.maximum(positions, 0)], -1)

    def _search_growing(self, q: np.ndarray, k: int, selector: Any) -> tuple[np.ndarray, np.ndarray]:
        """The graph's best and the growing rows' exact best, merged: the growing index is searched only over the
        ids not yet in the graph (it may still hold built ones until it is compacted)."""
        parts = []
        if self._built > 0:
            parts.append(self._index.search(q, k, params=self._params(selector, k)))
        in_range = _faiss.IDSelectorRange(self._built, self._next_id)
        only = in_range if selector is None else _faiss.IDSelectorAnd(in_range, selector)
        parts.append(self._growing.search(q, k, params=_faiss.SearchParameters(sel=only)))
        scores = np.concatenate([s for s, _ in parts], axis=1)
        ids = np.concatenate([i for _, i in parts], axis=1)
        best = np.argsort(-np.where(ids >= 0, scores, -np.inf), axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, best, axis=1), np.take_along_axis(ids, best, axis=1)

    # -- snapshots (used by mmrag.faiss_snapshot) -----------------------------------------------------------------

    def state(self) -> IndexState:
        """The index bytes, the payload rows in internal-id order, the counters and the growing rows: what a
        snapshot stores."""
        with self._lock:
            raw = faiss.serialize_index(self._index).tobytes()
            ids = sorted(self._rows)
            meta = {"kind": self.kind, "next_id": self._next_id, "dead": self._dead, "ids": ids, "dim": self.dim}
            growing = None
            if self._growing is not None:
                meta |= {"built": self._built, "staged": self._staged}
                growing = faiss.serialize_index(self._growing).tobytes()
            return IndexState(raw, [self._rows[i] for i in ids], meta, growing)

    @classmethod
    def restored(
        cls,
        raw: bytes,
        rows: Iterable[VectorRow],
        meta: dict[str, Any],
        settings: FaissSettings | None = None,
        growing: bytes | None = None,
    ) -> FaissIndex:
        """The index ``state()`` described, exactly (same ids, same kind, same dead marks, same growing rows)."""
        index = cls(int(meta["dim"]), settings)
        index._index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
        index.kind = meta["kind"]
        index._next_id, index._dead = int(meta["next_id"]), int(meta["dead"])
        if "built" in meta:
            if growing is None:
                raise ValueError(f"the snapshot's graph holds {meta['built']} of {meta['next_id']} ids and no growing")
            index._growing = faiss.deserialize_index(np.frombuffer(growing, dtype=np.uint8))
            index._built, index._staged = int(meta["built"]), int(meta["staged"])
        index._cols.ensure(index._next_id)
        for internal, row in zip(meta["ids"], rows, strict=True):
            index._remember(int(internal), row)
        return index


def checked_vector(row: VectorRow, dim: int) -> np.ndarray:
    """The row's vector as float32, or the PermanentError of a vector of other than ``dim`` dims."""
    vector = np.asarray(row.vector, dtype=np.float32).reshape(-1)
    if vector.shape[0] != dim:
        raise PermanentError(
            STAGE,
            row.object_id,
            f"vector {row.vector_id} has {vector.shape[0]} dims, the index has {dim}",
            "index it with the space the index was built for",
        )
    return vector


def checked_query(query: np.ndarray, dim: int) -> np.ndarray:
    """The query as a float32 vector, or the PermanentError of a query of other than ``dim`` dims."""
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    if q.shape[0] != dim:
        raise PermanentError(STAGE, "query", f"{q.shape[0]} dims, the index has {dim}", "fix the query")
    return q


_resources: Any = None


def gpu_available(settings: FaissSettings) -> bool:
    """True when GPU search is allowed and this faiss build sees a CUDA device (faiss-cpu never does)."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return settings.faiss_gpu == "auto" and get_num_gpus is not None and get_num_gpus() > 0


def _gpu_resources() -> Any:
    global _resources
    if _resources is None:
        _resources = faiss.StandardGpuResources()
    return _resources
