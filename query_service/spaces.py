"""Which embedding space answers queries: the one the live alias names, followed within ``refresh_s``.

Every query is answered entirely by one space: the servicer takes one ``ServingSpace`` per call, encodes with its
encoder (its CLIP, its precision, its fusion weights) and searches with its ``ShardedSearch``, whose requests name
that space (id and name: the collection the shards search). A thread looks at the alias (one Milvus
``describe_collection(alias)`` gives the collection and the spec its updater kept on it, mmrag.space_catalog); when
it names another space, that space's encoder is loaded and warmed in the thread and one probe search must be
answered by every shard from that space (the workers open its collection), and only then do new queries go to it,
so a swap costs no query a model load or a partial answer, and no query mixes spaces. The ``keep`` most recently
served spaces stay loaded (a rollback is instant). A space that cannot be served here (no spec and not the
configured space, its model files missing or different, a shard that cannot search it) leaves the previous one
serving, with the reason in readiness details and logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import grpc
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from mmrag.milvus_index import milvus_client
from mmrag.settings import VectorStoreSettings
from mmrag.space_catalog import SpaceSpec, live_collection, parse_collection
from query_service.query_encoder import QueryEncoder
from query_service.search import ShardedSearch

if TYPE_CHECKING:
    from query_service.ask import Asker

log = logging.getLogger(__name__)
RETRY_FAILED_S = 10.0  # a space that could not be served here is tried again this often, not at every look
PROBE_TEXT = "probe"


@dataclass(frozen=True)
class ServingSpace:
    spec: SpaceSpec
    encoder: QueryEncoder
    search: ShardedSearch
    asker: Asker | None = None


# Builds a space's serving parts and warms its encoder (slow: loads models); ValueError when it cannot here.
ServingBuilder = Callable[[SpaceSpec], ServingSpace]
# What the live alias names now: (collection, its spec or None), None when it points nowhere; raises when the
# store cannot be asked.
AliasResolver = Callable[[], "tuple[str, SpaceSpec | None] | None"]


class LiveSpaces:
    def __init__(
        self,
        configured: SpaceSpec,
        build: ServingBuilder,
        resolve: AliasResolver | None,
        collection_prefix: str,
        refresh_s: float = 1.0,
        keep: int = 2,
        probe: Callable[[ServingSpace], None] | None = None,
    ) -> None:
        """``configured``: this service's own space (MMRAG_* model settings), served while the alias points
        nowhere; ``resolve`` None: serve it only (no vector store to ask, e.g. Faiss alone); ``probe``: raises
        ValueError while a space built for a switch cannot answer yet (see ``probe_shards``)."""
        self.configured = configured
        self.build = build
        self.resolve = resolve
        self.collection_prefix = collection_prefix
        self.refresh_s = refresh_s
        self.keep = keep
        self.probe = probe
        self.problem = ""  # why the alias's space is not the one serving ('' when it is)
        self._loaded: OrderedDict[str, ServingSpace] = OrderedDict()  # by collection, most recent last
        self._current: ServingSpace | None = None
        self._failed: dict[str, tuple[float, str]] = {}  # collection -> (monotonic time, why it cannot be served)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serves what the alias names (or the configured space), then follows the alias in a thread."""
        self.refresh()
        if self._current is None:  # the alias's space cannot be served here: the configured one answers
            self._switch(self.configured)
        if self.resolve is not None and self.refresh_s > 0:
            self._thread = threading.Thread(target=self._run, name="live-space", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def current(self) -> ServingSpace:
        """The space that answers a query now (no I/O)."""
        current = self._current
        if current is None:
            raise RuntimeError("LiveSpaces used before start()")
        return current

    def health(self) -> tuple[bool, str]:
        """Always ready (the serving space answers); the detail names it and any alias it cannot follow."""
        current = self._current
        serving = f"serving space {current.spec.label} ({current.spec.collection})" if current else "no space yet"
        return True, f"{serving}; {self.problem}" if self.problem else serving

    def refresh(self) -> None:
        """Looks at the alias once and switches to its space when it can be served; never raises."""
        try:
            target = self._target()
            if self._current is None or target.collection != self._current.spec.collection:
                self._switch(target)
            self._note("")
        except (MilvusException, grpc.RpcError, OSError) as exc:
            self._note(f"the live alias cannot be read ({type(exc).__name__}: {exc}); the last space answers")
        except ValueError as exc:
            self._note(f"the live alias's space is not served: {exc}")

    def _target(self) -> SpaceSpec:
        found = self.resolve() if self.resolve is not None else None
        if found is None:
            return self.configured
        collection, spec = found
        if spec is not None:
            return spec
        parsed = parse_collection(self.collection_prefix, collection)
        if parsed is None or parsed[0] != self.configured.space_id:
            raise ValueError(
                f"collection {collection} keeps no space spec and is not this service's space "
                f"{self.configured.space_id} -> restart its index updater (it writes the spec) or give this "
                "service that space's MMRAG_* model settings"
            )
        return replace(self.configured, space_name=parsed[1], collection=collection)

    def _switch(self, spec: SpaceSpec) -> None:
        failed_at, why = self._failed.get(spec.collection, (float("-inf"), ""))
        if time.monotonic() - failed_at < RETRY_FAILED_S:
            raise ValueError(why)
        try:
            serving = self._loaded.pop(spec.collection, None) or self.build(spec)
        except ValueError as exc:
            self._failed[spec.collection] = (time.monotonic(), str(exc))
            raise
        self._loaded[spec.collection] = serving
        if self._current is not None and self._current is not serving and self.probe is not None:
            try:
                self.probe(serving)
            except ValueError as exc:
                self._failed[spec.collection] = (time.monotonic(), str(exc))
                raise
        self._failed.pop(spec.collection, None)
        while len(self._loaded) > self.keep:
            _, dropped = self._loaded.popitem(last=False)
            log.info("let space %s go (kept the %d most recent)", dropped.spec.label, self.keep)
        if self._current is not serving:
            log.info("queries now answered by space %s (%s)", spec.label, spec.collection)
        self._current = serving

    def _note(self, problem: str) -> None:
        if problem and problem != self.problem:
            log.error("%s", problem)
        self.problem = problem

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception:  # a model that fails to load in an unforeseen way must not stop following the alias
                log.exception("following the live alias failed once; the last space answers")


def probe_shards(serving: ServingSpace, timeout_s: float) -> None:
    """One search in ``serving``'s space; ValueError naming the shards that did not answer it from that space (a
    worker that cannot open its collection, or not yet)."""
    vector = serving.encoder.encode(PROBE_TEXT, b"")
    outcome = serving.search.search(vector, 1, timeout_s, PROBE_TEXT)
    if outcome.missing_shards:
        raise ValueError(
            f"space {serving.spec.label}: shards {outcome.missing_shards} did not answer a probe from it "
            f"({'; '.join(outcome.errors) or 'no reply in time'}) -> check the retrieval workers"
        )


def milvus_alias_resolver(store: VectorStoreSettings, timeout_s: float = 5.0) -> AliasResolver:
    """Reads the live alias through a dedicated client, made again after a failure (a new channel)."""
    client: MilvusClient | None = None

    def resolve() -> tuple[str, SpaceSpec | None] | None:
        nonlocal client
        if client is None:
            token = store.milvus_token.get_secret_value()
            client = milvus_client(store.milvus_uri, token, timeout_s)
        try:
            return live_collection(client, store.live_alias)
        except (MilvusException, grpc.RpcError):
            failed, client = client, None
            failed.close()
            raise

    return resolve
