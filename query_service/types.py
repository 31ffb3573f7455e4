"""The result types the query side's modules share (search, caches, fusion, sources, Ask): at the package's bottom."""

from __future__ import annotations

from dataclasses import dataclass

from mmrag.pb.events_pb2 import SearchHit


@dataclass(frozen=True)
class ShardHit:
    hit: SearchHit
    shard: int


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[ShardHit]
    missing_shards: list[int]
    errors: list[str]
    from_cache: bool = False
    degraded: str = ""  # "keyword": some shard's vector index did not answer, its keyword index did

    @property
    def partial(self) -> bool:
        return bool(self.missing_shards)
