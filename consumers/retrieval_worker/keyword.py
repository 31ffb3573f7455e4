"""The shard's keyword list. An index that searches keywords itself (``KeywordSearcher``) answers it, as current as
its vectors: Milvus by BM25 over its rows' keyword field, a Faiss shard from the keyword index it changes with each
batch of vectors. Beside a store (Milvus) the worker keeps a side index, built from the shard's rows at warm-up and
again every ``refresh_s`` in a thread: it answers while the store cannot (the keyword fallback), and for a
collection made without the BM25 field it is the keyword list (a new row is then found by the vector list alone
until the next rebuild). An index that reports changes (``rows_version``) has its side index rebuilt soon after
it changed: after ``MIN_REFRESH_S``, or ``BUILD_SHARE``'s inverse times the last build's duration when that is
longer (rebuilds take at most ~1/10 of a core), never later than ``refresh_s``."""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter, Gauge

from mmrag.errors import PermanentError, RetryableError
from mmrag.keyword_index import KeywordIndex, KeywordSearcher, KeywordSupport
from mmrag.vector_index import Hit, IndexSearcher, SearchFilter

log = logging.getLogger(__name__)
MIN_REFRESH_S = 1.0
BUILD_SHARE = 0.1
FALLBACKS = Counter(
    "mmrag_keyword_fallback_searches_total",
    "Keyword searches answered by the side index because the store's own keyword search failed",
    ["shard"],
)
SIDE_CHUNKS = Gauge("mmrag_keyword_side_index_chunks", "Chunks with text in the shard's keyword side index", ["shard"])


class KeywordUnavailableError(Exception):
    """No keyword index can answer (the store failed and no side index was built yet)."""


def keyword_support(index: IndexSearcher) -> KeywordSupport:
    """How ``index`` searches keywords itself (read after its start: Milvus looks at the collection's fields)."""
    return index.keyword_support() if isinstance(index, KeywordSearcher) else KeywordSupport.NONE


class KeywordShard:
    def __init__(self, index: IndexSearcher, shard: int, refresh_s: float) -> None:
        self.index = index
        self.shard = shard
        self.refresh_s = refresh_s
        self.keywords = KeywordIndex()  # the side index
        self.built_at = 0.0  # monotonic time of the side index's last build; 0 = never
        self.build_s = 0.0  # how long the last build took
        self.built_version: int | None = None  # the index's rows_version the last build read
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, wait: bool = True) -> None:
        """After the index's start: builds the side index once (a failure is logged, the thread tries again) and
        starts refreshing it; without ``wait`` the first build runs in the thread too (until it is done, searches
        the index cannot answer raise KeywordUnavailableError). An index keeping its keywords in process needs
        none."""
        if keyword_support(self.index) is KeywordSupport.IN_PROCESS:
            return
        if wait:
            self.refresh()
        name = f"keyword-shard-{self.shard}"
        self._thread = threading.Thread(target=self._run, args=(not wait,), name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def refresh(self) -> bool:
        """Rebuilds the side index from the shard's rows unless the index says they did not change since the last
        build (a rebuild is seconds of CPU per 50k chunks, and holds the GIL); False (the old build kept) when they
        cannot be read."""
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
        SIDE_CHUNKS.labels(str(self.shard)).set(kept)
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
        """The index's own keyword search where it has one, the side index where it has none or its store fails
        (RetryableError). Raises KeywordUnavailableError when neither can answer."""
        index = self.index
        if isinstance(index, KeywordSearcher) and index.keyword_support() is not KeywordSupport.NONE:
            try:
                return index.keyword_search(text, top_k, self.shard, where)
            except RetryableError as exc:
                if not self.built_at:
                    raise KeywordUnavailableError(
                        f"shard {self.shard}: keyword search failed ({exc}) and the side index is not built yet"
                    ) from exc
                FALLBACKS.labels(str(self.shard)).inc()
        if not self.built_at:
            raise KeywordUnavailableError(f"keyword index of shard {self.shard} not built yet: {self.last_error}")
        return self.keywords.search(text, top_k, where)

    def _run(self, build_first: bool) -> None:
        if build_first:
            self.refresh()
        while not self._stop.wait(self.next_wait_s()):
            self.refresh()
