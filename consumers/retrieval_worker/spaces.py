"""The embedding spaces one retrieval worker's shard answers from: a request names its space (space id and name,
i.e. the collection ``<prefix>_<space id>[_<space name>]``), and the shard searches that space's index, so a query
vector is only ever compared with vectors of the space it was encoded for. The worker's own space is opened at
warm-up; a worker that can open others (Milvus: every space is a collection) opens the space a request names on
first use and keeps the ``keep`` most recently used ones (the live space and the rollback target after a swap).
A request for a space the worker cannot open is refused with the reason."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from consumers.retrieval_worker.keyword import KeywordShard
from mmrag.errors import PermanentError, RetryableError
from mmrag.vector_index import IndexSearcher

log = logging.getLogger(__name__)


class SpaceUnavailableError(Exception):
    """The request's space is not one this shard can search (the message says which and why)."""


def space_label(space_id: str, space_name: str) -> str:
    return f"{space_id}/{space_name}" if space_name else space_id


@dataclass
class ShardSpace:
    """One space's index of the shard and its keyword index (None: MMRAG_KEYWORD_REFRESH_S=0)."""

    space_id: str
    space_name: str
    index: IndexSearcher
    keywords: KeywordShard | None = None

    @property
    def label(self) -> str:
        return space_label(self.space_id, self.space_name)

    def close(self) -> None:
        if self.keywords is not None:
            self.keywords.close()
        close = getattr(self.index, "close", None)  # Milvus lets its channel go; Faiss keeps nothing open
        if close is not None:
            close()


# (space id, space name) -> the opened space (its index started); raises PermanentError for a space that does not
# exist, RetryableError when the store cannot be reached.
SpaceOpener = Callable[[str, str], ShardSpace]


class ShardSpaces:
    def __init__(self, home: ShardSpace, opener: SpaceOpener | None = None, keep: int = 2) -> None:
        self.home = home
        self.opener = opener
        self.keep = keep
        self._others: OrderedDict[tuple[str, str], ShardSpace] = OrderedDict()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Opens the worker's own space (and builds its keyword index)."""
        self.home.index.start()
        if self.home.keywords is not None:
            self.home.keywords.start()

    def get(self, space_id: str, space_name: str) -> ShardSpace:
        """The space a request names; SpaceUnavailableError naming it and the reason when it cannot be searched."""
        if (space_id, space_name) == (self.home.space_id, self.home.space_name):
            return self.home
        wanted = space_label(space_id, space_name)
        if self.opener is None:
            raise SpaceUnavailableError(
                f"query built for space {wanted}; this shard serves only {self.home.label} (its index holds one "
                "space) -> send the query to the workers of that space"
            )
        with self._lock:
            found = self._others.get((space_id, space_name))
            if found is None:
                found = self._open(self.opener, space_id, space_name)
            self._others.move_to_end((space_id, space_name))
            return found

    def _open(self, opener: SpaceOpener, space_id: str, space_name: str) -> ShardSpace:
        try:
            opened = opener(space_id, space_name)
        except (PermanentError, RetryableError) as exc:
            raise SpaceUnavailableError(f"space {space_label(space_id, space_name)} cannot be searched: {exc}") from exc
        log.info("shard opened space %s beside its own %s", opened.label, self.home.label)
        self._others[(space_id, space_name)] = opened
        while len(self._others) > self.keep:
            _, dropped = self._others.popitem(last=False)
            log.info("shard let space %s go (kept the %d most recent)", dropped.label, self.keep)
            dropped.close()
        return opened
