"""The answer cache's entries in Redis, so every query-service replica serves (and invalidates) the same answers.

Keys under ``namespace`` (``mmrag:<topic prefix>answers:``): ``e:<id>`` the entry (expires with the TTL),
``s:<scope>`` a hash entry id -> query vector (the candidates of a lookup), ``o:<object id>`` the ids of the entries
with that object among their sources, ``age`` a sorted set id -> stored time (the size bound). Ids whose entry
expired are dropped from the indexes when met. A lookup reads its scope's vectors (n x 4 x dim bytes), so the size
bound also bounds a lookup's cost. Any Redis failure is an AnswerStoreError: Ask goes on without the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import redis

from query_service.answer_entry import AnswerStoreError, CachedAnswer


@contextmanager
def _failures(doing: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise AnswerStoreError(f"redis answer cache: {doing} failed ({exc}); check MMRAG_CACHE_REDIS_URL") from exc


class RedisAnswerStore:
    def __init__(self, url: str, namespace: str, size: int, timeout_s: float = 0.5) -> None:
        # Any: redis-py types every reply as a union with its async client's awaitables
        self.redis: Any = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.ns = namespace
        self.size = size

    def candidates(self, scope: str) -> list[tuple[str, np.ndarray]]:
        with _failures("reading candidates"):
            found = self.redis.hgetall(f"{self.ns}s:{scope}")
        return [(k.decode(), np.frombuffer(v, dtype=np.float32)) for k, v in found.items()]

    def get(self, scope: str, entry_id: str) -> CachedAnswer | None:
        with _failures("reading an entry"):
            raw = self.redis.get(f"{self.ns}e:{entry_id}")
            if raw is None:
                self.redis.hdel(f"{self.ns}s:{scope}", entry_id)
                return None
        return CachedAnswer.from_bytes(raw)

    def put(self, entry: CachedAnswer, ttl_s: float) -> None:
        ttl_ms = max(1, int(ttl_s * 1000))
        with _failures("storing an entry"), self.redis.pipeline() as pipe:
            pipe.set(f"{self.ns}e:{entry.id}", entry.to_bytes(), px=ttl_ms)
            pipe.hset(f"{self.ns}s:{entry.scope}", entry.id, entry.vector.tobytes())
            pipe.pexpire(f"{self.ns}s:{entry.scope}", ttl_ms)
            for oid in entry.objects:
                pipe.sadd(f"{self.ns}o:{oid}", entry.id)
                pipe.pexpire(f"{self.ns}o:{oid}", ttl_ms)
            pipe.zadd(f"{self.ns}age", {entry.id: entry.stored_at_ms})
            pipe.zremrangebyscore(f"{self.ns}age", "-inf", entry.stored_at_ms - ttl_ms)
            pipe.zcard(f"{self.ns}age")
            over = int(pipe.execute()[-1]) - self.size
        if over > 0:
            self._evict(over)

    def _evict(self, count: int) -> None:
        with _failures("evicting"):
            oldest = [k.decode() for k, _ in self.redis.zpopmin(f"{self.ns}age", count)]
            raws = self.redis.mget([f"{self.ns}e:{k}" for k in oldest]) if oldest else []
        for raw in raws:
            if raw is not None:
                self.drop(CachedAnswer.from_bytes(raw))

    def drop(self, entry: CachedAnswer) -> bool:
        with _failures("dropping an entry"), self.redis.pipeline() as pipe:
            pipe.delete(f"{self.ns}e:{entry.id}")
            pipe.hdel(f"{self.ns}s:{entry.scope}", entry.id)
            for oid in entry.objects:
                pipe.srem(f"{self.ns}o:{oid}", entry.id)
            pipe.zrem(f"{self.ns}age", entry.id)
            return bool(pipe.execute()[0])

    def citing(self, object_id: str) -> list[CachedAnswer]:
        key = f"{self.ns}o:{object_id}"
        with _failures("reading an object's entries"):
            ids = sorted(k.decode() for k in self.redis.smembers(key))
            raws = self.redis.mget([f"{self.ns}e:{k}" for k in ids]) if ids else []
            gone = [k for k, raw in zip(ids, raws, strict=True) if raw is None]
            if gone:
                self.redis.srem(key, *gone)
        return [CachedAnswer.from_bytes(raw) for raw in raws if raw is not None]
