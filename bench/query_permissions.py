"""bench.query's permissions phase: Search by a caller who may read 1%, 10% or 100% of the objects, against the
same searches unrestricted, and the recall@k of each shard's filtered vector search against an exact search over
the rows that caller may read.

Every object of bench.query's index carries readers (``readers_of``): all of them ``group:all``, every tenth also
``group:p10``, every hundredth also ``group:p1``; a caller holding one of those tokens sees that share. Latency:
Kafka request-reply through the real retrieval workers (each filters before ranking, and searches a selective
filter's visible rows exactly: the flat cut-off, MMRAG_FAISS_EXACT_SHARE); recall: the text list's query vector
searched with the caller's filter on indexes built like a worker's, merged over the shards, against numpy's exact
inner products over the visible rows with text.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
from rich.console import Console
from rich.table import Table

from mmrag.vector_index import IndexSearcher, SearchFilter, VectorRow
from query_service.filters import Scope

SHARES = {"1%": "group:p1", "10%": "group:p10", "100%": "group:all"}


def readers_of(n: int) -> tuple[str, ...]:
    """The readers of bench object ``n``: 1% of the objects hold group:p1, 10% group:p10, all group:all."""
    tokens = ["group:all"]
    if n % 10 == 0:
        tokens.append("group:p10")
    if n % 100 == 0:
        tokens.append("group:p1")
    return tuple(sorted(tokens))


def recall_at_k(
    indexes: Sequence[IndexSearcher], rows: Sequence[VectorRow], queries: Sequence[np.ndarray], token: str, k: int
) -> float:
    """Mean share of the exact top-k (visible rows with text, by inner product) found by the shards' filtered
    searches merged by score."""
    where = SearchFilter(readers=frozenset({token}), has_text=True)
    visible = [r for r in rows if where.admits(r)]
    matrix = np.stack([r.vector for r in visible]).astype(np.float32)
    found = []
    for q in queries:
        exact = {visible[i].vector_id for i in np.argsort(-(matrix @ q))[:k]}
        hits = [h for shard, index in enumerate(indexes) for h in index.search(q, k, shard=shard, where=where)]
        got = {h.row.vector_id for h in sorted(hits, key=lambda h: -h.score)[:k]}
        found.append(len(exact & got) / len(exact))
    return float(np.mean(found))


def permissions_phase(  # noqa: PLR0913
    search: Callable[..., object],
    timed: Callable[[Callable[[str], object], Sequence[str]], Sequence[float]],
    texts: Sequence[str],
    query_vectors: Sequence[np.ndarray],
    indexes: Sequence[IndexSearcher],
    rows: Sequence[VectorRow],
    top_k: int,
) -> None:
    """Prints Search p50/p99 over Kafka per share (each query asked restricted, then unrestricted, so both see the
    same load) and each share's recall@k."""
    table = Table(title=f"Permissions: Search by a caller who may read a share of {len(rows):,} objects")
    for col in (
        "caller may read",
        "searches",
        "p50 ms",
        "p99 ms",
        "unrestricted p50 ms",
        "p50 ratio",
        f"recall@{top_k}",
    ):
        table.add_column(col, justify="right")
    for share, token in SHARES.items():
        restricted = partial(search, scope=Scope(readers=(token,)))
        unrestricted = partial(search, scope=Scope())
        mine: list[float] = []
        everyone: list[float] = []
        for text in texts:  # alternated query by query: both see the same load, the same caches
            mine += timed(restricted, [text])
            everyone += timed(unrestricted, [text])
        p50, base = statistics.median(mine), statistics.median(everyone)
        recall = recall_at_k(indexes, rows, query_vectors, token, top_k)
        p99 = float(np.percentile(mine, 99))
        cells = (f"{p50:.1f}", f"{p99:.1f}", f"{base:.1f}", f"{p50 / base:.2f}", f"{recall:.3f}")
        table.add_row(share, str(len(mine)), *cells)
    Console().print(table)
