"""The shard's keyword index beside its vector index: built from the index's rows of the shard at warm-up and again
in a thread, so new rows, deletes and overwrites reach it. An index that reports changes (Faiss: ``rows_version``)
is rebuilt soon after it changed: after ``MIN_REFRESH_S``, or ``BUILD_SHARE``'s inverse times the last build's
duration when that is longer (rebuilds take at most ~1/10 of a core), never later than ``refresh_s``; one that
cannot report them (Milvus) every ``refresh_s``. Until a new row is in it, the row is found by the vector list
alone. When the vector index cannot be read (Milvus down), the last build keeps answering: that is the keyword
fallback."""

from __future__ import annotations

import logging
import threading
import time

from mmrag.errors import PermanentError, RetryableError
from mmrag.keyword_index import KeywordIndex
from mmrag.vector_index import Hit, IndexSearcher, SearchFilter

log = logging.getLogger(__name__)
MIN_REFRESH_S = 1.0
BUILD_SHARE = 0.1


class KeywordUnavailableError(Exception):
    """No keyword index was built yet (the vector index could not be read since the start)."""


class KeywordShard:
    def __init__(self, index: IndexSearcher, shard: int, refresh_s: float) -> None:
        self.index = index
        self.shard = shard
        self.refresh_s = refresh_s
        self.keywords = KeywordIndex()
        self.built_at = 0.0  # monotonic time of the last build; 0 = never
        self.build_s = 0.0  # how long the last build took
        self.built_version: int | None = None  # the index's rows_version the last build read
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, wait: bool = True) -> None:
        """Builds once (a failure is logged, the thread tries again) and starts refreshing; without ``wait`` the
        first build runs in the thread too (until it is done, keyword searches raise KeywordUnavailableError)."""
        if wait:
            self.refresh()
        name = f"keyword-shard-{self.shard}"
        self._thread = threading.Thread(target=self._run, args=(not wait,), name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def refresh(self) -> bool:
        """Rebuilds from the shard's rows unless the index says they did not change since the last build (a rebuild
        is seconds of CPU per 50k chunks, and holds the GIL); False (the old index kept) when they cannot be read."""
        started = time.monotonic()
        version = self.index.rows_version()
        if self.built_at and version is not None and version == self.built_version:
            return True
        try:
            rows = list(self.index.shard_rows(self.shard))
        except (RetryableError, PermanentError) as exc:
            self.last_error = str(exc)
            log.warning("keyword index of shard %d not refreshed, the last build answers: %s", self.shard, exc)
            return False
        kept = self.keywords.rebuild(rows)
        self.built_at, self.built_version, self.last_error = time.monotonic(), version, ""
        self.build_s = self.built_at - started
        log.info("keyword index of shard %d: %d chunks in %.2f s", self.shard, kept, self.build_s)
        return True

    def next_wait_s(self) -> float:
        """Seconds until the next refresh: soon for an index that reports its changes (an unchanged one costs a
        version check), ``refresh_s`` for one that cannot."""
        if self.index.rows_version() is None:
            return self.refresh_s
        return min(self.refresh_s, max(MIN_REFRESH_S, self.build_s / BUILD_SHARE))

    def search(self, text: str, top_k: int, where: SearchFilter) -> list[Hit]:
        if not self.built_at:
            raise KeywordUnavailableError(f"keyword index of shard {self.shard} not built yet: {self.last_error}")
        return self.keywords.search(text, top_k, where)

    def _run(self, build_first: bool) -> None:
        if build_first:
            self.refresh()
        while not self._stop.wait(self.next_wait_s()):
            self.refresh()
