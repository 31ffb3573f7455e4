"""Results per object: the best chunk of each object (what Milvus' grouping search gives), on any index backend.

An index returns chunks; a chunked document can fill a top-k with its own chunks. The worker asks for more chunks
until it has ``top_k`` distinct objects or the shard has no more rows, then keeps each object's best chunk. Exact:
all rows of an object live on one shard, so a shard's best chunk per object is the object's best chunk.
"""

from __future__ import annotations

from collections.abc import Callable

from mmrag.vector_index import Hit

FIRST_FETCH = 4  # chunks fetched per wanted object at first (documents have a few chunks each)
MAX_FETCH = 4096  # the most chunks one shard search asks for while grouping


def best_per_object(search: Callable[[int], list[Hit]], top_k: int, max_fetch: int = MAX_FETCH) -> list[Hit]:
    """The best ``top_k`` objects, each as its best chunk, best first. ``search(limit)`` is the shard's search
    returning up to ``limit`` chunks best first; it is called again with a doubled limit while fewer than ``top_k``
    objects were found and the shard had more chunks (at most ``max_fetch``)."""
    limit = min(max_fetch, max(top_k, top_k * FIRST_FETCH))
    while True:
        hits = search(limit)
        best: dict[str, Hit] = {}
        for hit in hits:  # best first: the first chunk of an object is its best
            best.setdefault(hit.row.object_id, hit)
        if len(best) >= top_k or len(hits) < limit or limit >= max_fetch:
            return list(best.values())[:top_k]
        limit = min(max_fetch, limit * 2)
