"""A Faiss shard's rows indexed per half of the joint vector: one ``FaissIndex`` over the MiniLM half, one over the
CLIP half (Milvus' multi-vector fields, each with its own index).

Why not one index of joint vectors: the default fusion searches each half with the other one zeroed (the text list
with the MiniLM half, the CLIP list with the CLIP half). On one HNSW graph of joint vectors such a query scores every
row that lacks the half 0: a plateau the graph's greedy walk cannot find its way across, so the beam ends among the
wrong rows. Measured (clustered joint vectors of the bench.index corpus, 100,000 rows, 30% with an image, M 32,
efConstruction 64): CLIP-half queries found 0.65 of their exact top 10 at efSearch 128 and 0.94 at efSearch 2048
(22 ms); the MiniLM half, held by 90% of the rows, 1.00. Here each half's index holds the rows whose half is not zero,
in that half's dimensions only, so a half query searches a graph of exactly the rows it ranks, with the same inner
products as before; the graphs are also cheaper to build (384 and 512 dimensions instead of 896 for every row).

A joint query (both halves: ``MMRAG_FUSION=joint``) searches both halves for their best ``max(top_k,
MMRAG_FAISS_HNSW_EF_SEARCH)`` (every row of a half still exact, below the threshold) and ranks the union by the
whole inner product (each row's other half read back from its index): Milvus' hybrid search; exact while both halves
are flat.

A row whose halves are both zero is kept in the MiniLM half (as a zero vector), so every row is somewhere. Each half
applies the same records in the same order on every replica, so replicas still hold the same indexes. A search
running while a record is applied may see its MiniLM half updated before its CLIP half; the record's INDEXED status
is written after both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from mmrag.faiss_index import FaissIndex, FaissSettings, IndexState, checked_query, checked_vector
from mmrag.vector_index import NO_FILTER, Hit, SearchFilter, VectorRow

HALVES = ("text", "image")


class HalvesIndex:
    """The FaissIndex interface (writer, searcher, growing rows, snapshot state) over two FaissIndex, one per half."""

    def __init__(self, dim: int, text_dim: int, settings: FaissSettings | None = None) -> None:
        if not 0 < text_dim < dim:
            raise ValueError(f"the MiniLM half ({text_dim} dims) must leave a CLIP half in {dim} dims")
        self.dim, self.text_dim = dim, text_dim
        self.settings = settings or FaissSettings()
        self.text, self.image = FaissIndex(text_dim, self.settings), FaissIndex(dim - text_dim, self.settings)
        self._writing = threading.Lock()
        self._both = 0  # rows held by both halves: count() is the two counts less these

    @property
    def halves(self) -> tuple[FaissIndex, FaissIndex]:
        return self.text, self.image

    @property
    def kind(self) -> str:
        """Each half's kind, e.g. ``text hnsw, image flat``."""
        return ", ".join(f"{name} {half.kind}" for name, half in zip(HALVES, self.halves, strict=True))

    def start(self) -> None:
        self.text.start()
        self.image.start()

    # -- writer side ---------------------------------------------------------------------------------------------

    def upsert(self, rows: Sequence[VectorRow]) -> None:
        """Adds rows in order; an existing vector_id is overwritten in each half, and leaves a half its new vector
        lacks. Each half gets its operations in record order, runs of one kind in one call."""
        if not rows:
            return
        runs: list[list[tuple[str, list[Any]]]] = [[], []]
        holding: dict[str, list[bool]] = {}  # where this call already put a vector_id (a later row overwrites it)
        vectors = [checked_vector(row, self.dim) for row in rows]  # every row first: a refused batch changes nothing
        with self._writing:
            for row, vector in zip(rows, vectors, strict=True):
                parts = (vector[: self.text_dim], vector[self.text_dim :])
                held = holding.get(row.vector_id) or [half.holds(row.vector_id) for half in self.halves]
                wanted = holding[row.vector_id] = [bool(parts[0].any()) or not parts[1].any(), bool(parts[1].any())]
                self._both += int(all(wanted)) - int(all(held))
                for n, half_runs in enumerate(runs):
                    if wanted[n]:
                        _append(half_runs, "upsert", replace(row, vector=parts[n]))
                    elif held[n]:
                        _append(half_runs, "delete", row.vector_id)
            for half, half_runs in zip(self.halves, runs, strict=True):
                for op, items in half_runs:
                    if op == "upsert":
                        half.upsert(items)
                    else:
                        half.delete(items)

    def delete(self, vector_ids: Sequence[str]) -> None:
        with self._writing:
            for vid in vector_ids:
                held = [half.holds(vid) for half in self.halves]
                self._both -= int(all(held))
                for half, there in zip(self.halves, held, strict=True):
                    if there:
                        half.delete([vid])

    def rows_of(self, object_id: str) -> list[VectorRow]:
        found: dict[str, list[Any]] = {}
        for n, half in enumerate(self.halves):
            for row in half.rows_of(object_id):
                found.setdefault(row.vector_id, [row, None, None])[n + 1] = row.vector
        out = []
        for row, text, image in found.values():
            text = np.zeros(self.text_dim, np.float32) if text is None else text
            image = np.zeros(self.dim - self.text_dim, np.float32) if image is None else image
            out.append(replace(row, vector=np.concatenate([text, image]).astype(np.float32)))
        return out

    def unbuilt(self) -> int:
        return self.text.unbuilt() + self.image.unbuilt()

    def build(self, max_rows: int | None = None) -> int:
        """Moves up to ``max_rows`` growing rows into the graphs, the MiniLM half's first; returns the rows still
        growing in both."""
        if self.text.build(max_rows) == 0:
            self.image.build(max_rows)
        return self.unbuilt()

    # -- searcher side -------------------------------------------------------------------------------------------

    def count(self) -> int:
        return self.text.count() + self.image.count() - self._both

    def rows_version(self) -> int | None:
        return (self.text.rows_version() or 0) + (self.image.rows_version() or 0)

    def shard_rows(self, shard: int) -> Iterator[VectorRow]:
        seen: set[str] = set()
        for half in self.halves:
            for row in half.shard_rows(shard):
                if row.vector_id not in seen:
                    seen.add(row.vector_id)
                    yield row

    def search(
        self, query: np.ndarray, top_k: int, shard: int | None = None, where: SearchFilter = NO_FILTER
    ) -> list[Hit]:
        q = checked_query(query, self.dim)
        text_q, image_q = q[: self.text_dim], q[self.text_dim :]
        if not image_q.any():
            return self.text.search(text_q, top_k, shard, where)
        if not text_q.any():
            return self.image.search(image_q, top_k, shard, where)
        rows: dict[str, VectorRow] = {}
        for half, part in ((self.text, text_q), (self.image, image_q)):
            wide = half.count() if half.kind == "flat" else max(top_k, self.settings.faiss_hnsw_ef_search)
            for hit in half.search(part, wide, shard, where):
                rows.setdefault(hit.row.vector_id, hit.row)
        ids = list(rows)
        scores = self.text.inner_products(ids, text_q) + self.image.inner_products(ids, image_q)
        hits = [Hit(rows[vid], float(s)) for vid, s in zip(ids, scores, strict=True)]
        return sorted(hits, key=lambda h: (-h.score, h.row.vector_id))[:top_k]

    # -- snapshots -----------------------------------------------------------------------------------------------

    def state(self) -> dict[str, IndexState]:
        """Each half's state, by half name (a snapshot writes each in its own directory)."""
        with self._writing:
            return {name: half.state() for name, half in zip(HALVES, self.halves, strict=True)}

    @classmethod
    def restored(cls, states: dict[str, IndexState], settings: FaissSettings) -> HalvesIndex:
        """The index whose halves ``state()`` described."""
        text, image = (
            FaissIndex.restored(states[name].raw, states[name].rows, states[name].meta, settings, states[name].growing)
            for name in HALVES
        )
        index = cls(text.dim + image.dim, text.dim, settings)
        index.text, index.image = text, image
        index._both = len(text.held_ids() & image.held_ids())
        return index


def _append(runs: list[tuple[str, list[Any]]], op: str, item: Any) -> None:
    if runs and runs[-1][0] == op:
        runs[-1][1].append(item)
    else:
        runs.append((op, [item]))


def index_for(dim: int, text_dim: int, settings: FaissSettings) -> FaissIndex | HalvesIndex:
    """A shard's index for a space of ``dim`` dims whose first ``text_dim`` are the MiniLM half: per half when the
    space has both halves, else one index."""
    return HalvesIndex(dim, text_dim, settings) if 0 < text_dim < dim else FaissIndex(dim, settings)
