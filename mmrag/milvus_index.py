"""Milvus adapter of the vector index ports (writer and searcher): one collection per embedding space, reached
through the alias ``<prefix>_live``.

Works against milvus-lite run as a local server and against a real Milvus deployment by URI (same code path).
Errors are classified here, at the boundary: a request Milvus refuses for its content (a malformed row or filter)
is the item's fault (PermanentError, naming the object); anything else means Milvus is unreachable, restarting or
not serving the collection (RetryableError). A released collection is loaded again and a dropped connection made
again by the adapter itself, once per call, so a restarted Milvus needs no restarted service.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from pymilvus import DataType, Function, FunctionType, MilvusClient
from pymilvus.exceptions import (
    DataNotMatchException,
    DataTypeNotMatchException,
    FieldTypeException,
    MilvusException,
    ParamError,
    PrimaryKeyException,
)
from tenacity import Retrying, stop_after_delay, wait_fixed

from mmrag.errors import PermanentError, RetryableError
from mmrag.keyword_index import K1, B, KeywordSupport, analyzer_text
from mmrag.milvus_manifest import COMPLETE_PROPERTY, RowManifests
from mmrag.settings import VectorStoreSettings
from mmrag.space import EmbeddingSpace
from mmrag.vector_index import NO_FILTER, Hit, SearchFilter, VectorRow

log = logging.getLogger(__name__)

STAGE = "milvus"
# pymilvus pings every 10 s, also without calls; a gRPC-core server with its defaults (milvus-lite) takes a ping
# without data once per 5 min and answers more with GOAWAY too_many_pings (the channel drops, the logs fill). These
# ping only during calls, at most every 330 s: every server accepts that (real Milvus allows a ping every 5 s).
MILVUS_GRPC_OPTIONS = {
    "grpc.keepalive_time_ms": 330_000,
    "grpc.keepalive_timeout_ms": 20_000,
    "grpc.keepalive_permit_without_calls": False,
}


def milvus_client(uri: str, token: str = "", timeout_s: float | None = None) -> MilvusClient:
    """A dedicated client (its own channel: closing it really drops it) with keepalive settings any server takes."""
    return MilvusClient(uri=uri, token=token, timeout=timeout_s, dedicated=True, grpc_options=MILVUS_GRPC_OPTIONS)


PAYLOAD_FIELDS = [
    "id",
    "object_id",
    "version",
    "chunk_index",
    "shard",
    "text",
    "char_start",
    "char_end",
    "page",
    "has_text",
    "has_image",
    "event_time_ms",
    "indexed_at_ms",
]
CONTENT_TYPE = "content_type"  # a later field: collections made before it lack it (their rows match no type filter)
CONTENT_TYPE_MAX_BYTES = 255
# A later field too: the object's reader tokens (an ARRAY of VARCHAR, filtered with array_contains_any). A collection
# made before it has no readers: a restricted caller sees none of its rows (fail closed) until it is re-indexed.
READERS = "readers"
READERS_MAX = 64  # tokens per object (an S3 tag value is at most 256 characters: ~36 tokens)
READER_MAX_BYTES = 256
# Later fields too: the chunk's keyword tokens (``analyzer_text``) and their BM25 sparse vector, made by Milvus from
# them on every insert, so a keyword search finds a row as soon as a vector search does. Milvus-lite has only the
# "standard" and "jieba" tokenizers; "standard" splits at what Unicode word segmentation does, which "_" does not.
KEYWORDS = "keywords"
SPARSE = "sparse"
KEYWORD_ANALYZER = {"tokenizer": "standard", "filter": ["lowercase"]}
TEXT_MAX_BYTES = 65535  # Milvus' VARCHAR limit, counted in UTF-8 bytes (milvus-lite counts characters)
OBJECT_ID_MAX_BYTES = 2048  # an S3 key is at most 1024 bytes, a bucket name 63
CALL_TIMEOUT_S = 10.0

# Raised by pymilvus before a request is sent: the rows or the filter do not fit the schema.
_CLIENT_INPUT_ERRORS = (
    ParamError,
    DataTypeNotMatchException,
    DataNotMatchException,
    PrimaryKeyException,
    FieldTypeException,
)
# Server codes of a refused request: Milvus' parameter errors (merr 1100-1102, invalid insert data 1804) and the
# legacy IllegalArgument family (5, 7, 11, 12; milvus-lite sends its argument errors as 6).
_INPUT_CODES = frozenset({1100, 1101, 1102, 1804})
_INPUT_LEGACY_CODES = frozenset({5, 6, 7, 11, 12})
# The deployment, not the item: collection/database/alias missing or not loaded, authentication. Real Milvus marks
# some of these as input errors (the caller named them), but no other item would fare better.
_DEPLOYMENT_CODES = frozenset({100, 101, 103, 106, 800, 1400, 1401, 1600, 1800})
_NOT_LOADED = 101  # after a restart a collection comes back released
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
_FILTER_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_LIKE_ESCAPES = str.maketrans({"%": "\\%", "_": "\\_"})
_OVERFETCH = 4  # a LIKE that only narrows (key prefixes) is post-filtered: fetch more, up to this many times over
# Every read sees every write acknowledged before it: the updater writes status "indexed" after its upsert returns,
# and Milvus' default (Bounded) would answer from rows up to seconds old. The price: a query node waits until it
# has consumed the writes up to the read's timestamp (about a time tick, 200 ms by default, on a busy cluster).
READ_YOUR_WRITES = "Strong"


class Fault(enum.Enum):
    ITEM = "item"  # the request's content: permanent for that item
    NOT_LOADED = "not-loaded"  # load the collection, then try again
    CONNECTION = "connection"  # make a new client, then try again
    MILVUS = "milvus"  # anything else the server or the network says: retry later


def classify(exc: Exception) -> Fault:
    """Whose fault a pymilvus or gRPC error is, from its class and codes (never from its message)."""
    if isinstance(exc, grpc.RpcError):
        code = exc.code()
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return Fault.ITEM
        return Fault.CONNECTION if code in _UNREACHABLE else Fault.MILVUS
    if not isinstance(exc, MilvusException):
        return Fault.MILVUS
    code, legacy = exc.code, exc.compatible_code
    if code == _NOT_LOADED or legacy == _NOT_LOADED:
        return Fault.NOT_LOADED
    if code == 2 or code in _UNREACHABLE:  # 2: service unavailable; pymilvus' "Fail connecting" uses it too
        return Fault.CONNECTION
    if code in _DEPLOYMENT_CODES:
        return Fault.MILVUS
    if isinstance(exc, _CLIENT_INPUT_ERRORS) or exc.is_input_error:
        return Fault.ITEM
    return Fault.ITEM if code in _INPUT_CODES or legacy in _INPUT_LEGACY_CODES else Fault.MILVUS


def filter_literal(value: str) -> str:
    """``value`` as a double-quoted filter string. Escapes only what Milvus' parser and milvus-lite's both define
    (backslash, quote, CR, LF, tab; everything else is taken verbatim by both), so any S3 key matches itself.

    Why not pymilvus' filter templates (``filter_params``): milvus-lite 3.2.2 refuses ``{name}`` placeholders."""
    return '"' + value.translate(_FILTER_ESCAPES) + '"'


def filter_expression(shard: int | None, where: SearchFilter) -> str:
    """The Milvus boolean expression of a shard and a filter ('' = every row). Bucket and key-prefix conditions
    become LIKE patterns that may admit more than the filter (see ``_like_prefix``): results are post-filtered with
    ``where.admits``. A filter that matches nothing (``where.matches_nothing``) is never sent."""
    terms = [] if shard is None else [f"shard == {int(shard)}"]
    if where.object_ids is not None:
        terms.append(f"object_id in [{', '.join(filter_literal(o) for o in sorted(where.object_ids))}]")
    for name in ("has_text", "has_image"):
        wanted = getattr(where, name)
        if wanted is not None:
            terms.append(f"{name} == {'true' if wanted else 'false'}")
    if where.buckets is not None or where.key_prefix:
        buckets = sorted(where.buckets) if where.buckets is not None else [None]
        likes = [f"object_id like {_like_prefix(b, where.key_prefix)}" for b in buckets]
        terms.append(f"({' or '.join(likes)})")
    if where.content_types is not None:
        terms.append(f"{CONTENT_TYPE} in [{', '.join(filter_literal(t) for t in sorted(where.content_types))}]")
    if where.readers is not None:
        terms.append(f"array_contains_any({READERS}, [{', '.join(filter_literal(t) for t in sorted(where.readers))}])")
    if where.event_time_from_ms is not None:
        terms.append(f"event_time_ms >= {int(where.event_time_from_ms)}")
    if where.event_time_to_ms is not None:
        terms.append(f"event_time_ms < {int(where.event_time_to_ms)}")
    return " and ".join(terms)


def _like_prefix(bucket: str | None, key_prefix: str) -> str:
    """A LIKE pattern admitting at least the object ids of ``bucket`` (any bucket: None) whose key starts with
    ``key_prefix``. ``%`` and ``_`` are escaped; the pattern stops before a backslash (Milvus and milvus-lite read
    backslashes in patterns differently), and without a bucket it can only say "a slash, then the prefix": both
    admit more, which the caller's post-filter removes."""
    literal = (bucket + "/" if bucket is not None else "") + key_prefix
    literal = literal.split("\\", 1)[0]
    pattern = literal.translate(_LIKE_ESCAPES) + "%"
    return filter_literal(pattern if bucket is not None else "%/" + pattern)


def fit_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` within ``max_bytes`` of UTF-8, never cutting a character in two."""
    head = text[:max_bytes]  # a character is at least one byte
    encoded = head.encode()
    if len(encoded) <= max_bytes:
        return head
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def fit_tokens(terms: str, max_bytes: int) -> str:
    """The space-separated ``terms`` within ``max_bytes`` of UTF-8, without a token cut short at the end."""
    fitted = fit_utf8(terms, max_bytes)
    return fitted if len(fitted) == len(terms) or terms[len(fitted)] == " " else fitted.rpartition(" ")[0]


def _describe(exc: Exception) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"gRPC {exc.code().name}: {exc.details()}"
    if isinstance(exc, MilvusException):
        message = (exc.message or type(exc).__name__).strip().splitlines()
        return f"{type(exc).__name__} (code {exc.code}): {message[0] if message else ''}"
    return f"{type(exc).__name__}: {exc}"


class MilvusIndex:
    """Cheap constructor; ``start()`` connects and creates the collection and alias when missing (with ``create``
    false a missing collection is a PermanentError instead) and keeps ``properties`` on the collection."""

    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int,
        token: str = "",
        alias: str | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
        properties: dict[str, str] | None = None,
        create: bool = True,
    ) -> None:
        self.uri = uri
        self.collection = collection
        self.dim = dim  # read from the collection at start when it exists
        self.properties = properties or {}
        self.create = create
        self.token = token
        self.alias = alias
        self.timeout_s = timeout_s
        self._client: MilvusClient | None = None
        self._started = False
        self._fields = PAYLOAD_FIELDS  # plus content_type when the collection has it (read at start)
        self._keywords = False  # the collection has the keyword and BM25 fields (read at start)
        self._manifests = RowManifests(collection, self._call, timeout_s, READ_YOUR_WRITES)
        self._complete = False  # made with its manifests: an object without one has no rows (read at start)

    @classmethod
    def for_space(
        cls,
        settings: VectorStoreSettings,
        space: EmbeddingSpace,
        space_name: str = "",
        properties: dict[str, str] | None = None,
    ) -> MilvusIndex:
        """The collection of ``space`` (named ``space_name`` when a re-index space); the live alias is created with
        it only when it points nowhere, so a re-index never takes it from the serving space (`mmrag reindex
        --swap` moves it). ``properties``: kept on the collection (the updater's space spec)."""
        return cls(
            settings.milvus_uri,
            settings.collection_for(space.id, space_name),
            space.dim,
            settings.milvus_token.get_secret_value(),
            alias=settings.live_alias,
            properties=properties,
        )

    @property
    def client(self) -> MilvusClient:
        """The connected client; made again here after a dropped connection was let go."""
        if not self._started:
            raise RuntimeError(f"MilvusIndex({self.collection}) used before start()")
        if self._client is None:  # dedicated: closing it really drops the channel (a shared one stays in backoff)
            self._client = milvus_client(self.uri, self.token, self.timeout_s)
        return self._client

    def start(self) -> None:
        self._started = True
        try:
            if not self.create and not self.client.has_collection(self.collection):
                raise PermanentError(
                    STAGE, self.collection, "no such collection", "start or rebuild its space (`mmrag reindex`)"
                )
            self._ensure(lambda: self.client.has_collection(self.collection), self._create)
            self.client.load_collection(self.collection, timeout=self.timeout_s)
            manifests = self._manifests
            self._ensure(
                lambda: self.client.has_collection(manifests.collection), lambda: manifests.create(self.client)
            )
            self.client.load_collection(manifests.collection, timeout=self.timeout_s)
            self._read_fields()
            self._keep_properties()
            if self.alias:
                alias = self.alias
                self._ensure(
                    lambda: self._alias_target() is not None, lambda: self.client.create_alias(self.collection, alias)
                )
        except (MilvusException, grpc.RpcError) as exc:
            raise RetryableError(
                STAGE,
                self.uri,
                f"cannot open collection {self.collection}: {_describe(exc)}",
                "check that Milvus runs at MMRAG_MILVUS_URI",
            ) from exc

    def close(self) -> None:
        """Lets the connection go (a later call connects again)."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(MilvusException, grpc.RpcError):
                client.close()

    def _read_fields(self) -> None:
        described = self.client.describe_collection(self.collection, timeout=self.timeout_s)
        self.dim = next(int(f["params"]["dim"]) for f in described["fields"] if f["name"] == "vector")
        fields = {f["name"] for f in described["fields"]}
        self._complete = (described.get("properties") or {}).get(COMPLETE_PROPERTY) == "true"
        if not self._complete:
            log.warning(
                "Milvus collection %s was made before row manifests (%s): the rows of an object not changed since "
                "are found by a filter that scans the collection, so the updater slows as it grows; re-index into a "
                "new space (mmrag reindex) to remove the scan",
                self.collection,
                self._manifests.collection,
            )
        self._fields = [*PAYLOAD_FIELDS, *(f for f in (CONTENT_TYPE, READERS) if f in fields)]
        if READERS not in fields:
            log.warning(
                "Milvus collection %s has no %s field (made before document permissions): a caller with auth on "
                "sees none of its rows; re-index into a new space (mmrag reindex) to keep each object's readers",
                self.collection,
                READERS,
            )
        self._keywords = KEYWORDS in fields and SPARSE in fields
        if CONTENT_TYPE not in fields:
            log.warning(
                "Milvus collection %s has no %s field (made before it was kept): its rows match no content-type "
                "filter; re-index into a new space (mmrag reindex) to filter them by content type",
                self.collection,
                CONTENT_TYPE,
            )
        if not self._keywords:
            log.warning(
                "Milvus collection %s has no BM25 field %s (made before keyword search moved into Milvus): keyword "
                "searches use the retrieval workers' side index, rebuilt every MMRAG_KEYWORD_REFRESH_S, so a new or "
                "changed document reaches them up to that late; re-index into a new space (mmrag reindex) for "
                "keyword search as fresh as the vectors",
                self.collection,
                SPARSE,
            )

    def _keep_properties(self) -> None:
        found = self.client.describe_collection(self.collection, timeout=self.timeout_s).get("properties") or {}
        if any(found.get(k) != v for k, v in self.properties.items()):
            self.client.alter_collection_properties(self.collection, self.properties, timeout=self.timeout_s)

    @staticmethod
    def _ensure(exists: Callable[[], bool], create: Callable[[], object]) -> None:
        """Creates what is missing; another process (updater, retrieval workers) winning the race is fine."""
        if exists():
            return
        try:
            create()
        except MilvusException as exc:
            # The winner's create may still be under way (milvus-lite: its files exist, the collection not yet).
            for attempt in Retrying(stop=stop_after_delay(5), wait=wait_fixed(0.2), reraise=True):
                with attempt:
                    if not exists():
                        raise exc

    def _alias_target(self) -> str | None:
        """The collection the alias points at, or None when no collection holds it."""
        return alias_target(self.client, self.alias) if self.alias else None

    def _create(self) -> None:
        c = self.client
        if c.has_collection(self._manifests.collection):  # left by a dropped collection of the same name: stale
            c.drop_collection(self._manifests.collection)
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=32)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("object_id", DataType.VARCHAR, max_length=OBJECT_ID_MAX_BYTES)
        schema.add_field("version", DataType.VARCHAR, max_length=512)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES)
        for name in ("chunk_index", "shard", "char_start", "char_end", "page", "event_time_ms", "indexed_at_ms"):
            schema.add_field(name, DataType.INT64)
        schema.add_field("has_text", DataType.BOOL)
        schema.add_field("has_image", DataType.BOOL)
        schema.add_field(CONTENT_TYPE, DataType.VARCHAR, max_length=CONTENT_TYPE_MAX_BYTES)
        schema.add_field(
            READERS,
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_capacity=READERS_MAX,
            max_length=READER_MAX_BYTES,
        )
        schema.add_field(
            KEYWORDS,
            DataType.VARCHAR,
            max_length=TEXT_MAX_BYTES,
            enable_analyzer=True,
            analyzer_params=KEYWORD_ANALYZER,
        )
        schema.add_field(SPARSE, DataType.SPARSE_FLOAT_VECTOR)
        bm25 = Function(
            name="keywords_bm25",
            function_type=FunctionType.BM25,
            input_field_names=[KEYWORDS],
            output_field_names=[SPARSE],
        )
        schema.add_function(bm25)
        index = c.prepare_index_params()
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="IP")
        bm25_params = {"bm25_k1": K1, "bm25_b": B}
        index.add_index(SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25", params=bm25_params)
        c.create_collection(self.collection, schema=schema, index_params=index, properties={COMPLETE_PROPERTY: "true"})
        log.info("created Milvus collection %s (dim %d) at %s", self.collection, self.dim, self.uri)

    def _call(self, what: str, subject: str, request: Callable[[MilvusClient], Any]) -> Any:
        """Runs ``request``; after a released collection or a dropped connection, repairs it and runs it again
        (each repair at most once). Raises PermanentError naming ``subject`` when Milvus refuses the request's
        content, RetryableError when Milvus is unreachable or not serving the collection."""
        repaired: set[Fault] = set()
        while True:
            try:
                return request(self.client)
            except (MilvusException, grpc.RpcError) as exc:
                fault = classify(exc)
                if fault is Fault.ITEM:
                    raise PermanentError(
                        STAGE,
                        subject,
                        f"Milvus refused the {what} in {self.collection}: {_describe(exc)}",
                        "the item does not fit the collection's schema; fix it (or its producer) and upload it again",
                    ) from exc
                if fault in repaired or not self._repair(fault):
                    raise RetryableError(
                        STAGE,
                        subject,
                        f"{what} in {self.collection} at {self.uri} failed: {_describe(exc)}",
                        "check Milvus health (MMRAG_MILVUS_URI); the batch is retried, nothing is dropped",
                    ) from exc
                repaired.add(fault)

    def _repair(self, fault: Fault) -> bool:
        """Loads a released collection or lets a dropped client go; True when the request is worth running again."""
        if fault is Fault.CONNECTION:
            log.warning("Milvus at %s unreachable; connecting again", self.uri)
            client, self._client = self._client, None
            if client is not None:
                with contextlib.suppress(MilvusException, grpc.RpcError):
                    client.close()
            return True
        if fault is Fault.NOT_LOADED:
            log.warning("Milvus collection %s is not loaded (Milvus restarted?); loading it", self.collection)
            try:
                self.client.load_collection(self.collection, timeout=self.timeout_s)
                self.client.load_collection(self._manifests.collection, timeout=self.timeout_s)
            except (MilvusException, grpc.RpcError) as exc:
                log.warning("loading %s failed: %s", self.collection, _describe(exc))
                return False
            return True
        return False

    def upsert(self, rows: Sequence[VectorRow]) -> None:
        """Upserts ``rows`` after adding their ids to their objects' manifests: a crash between the two leaves
        listed ids without rows (``rows_of`` drops them), never a row no manifest lists."""
        if not rows:
            return
        added: dict[str, set[str]] = {}
        for r in rows:
            added.setdefault(r.object_id, set()).add(r.vector_id)
        before = self._manifests.read(added)
        changes: dict[str, tuple[Iterable[str], int]] = {}
        for oid, ids in added.items():
            manifest = before.get(oid)
            listed = manifest.vector_ids if manifest else self._unlisted_ids(oid)
            if not ids <= listed:  # a replay changes nothing
                changes[oid] = (listed | ids, manifest.pages if manifest else 0)
        self._manifests.write(changes)
        entities = [_to_entity(r, self._fields, self._keywords) for r in rows]
        objects = ", ".join(sorted(added))
        self._call("upsert", objects, lambda c: c.upsert(self.collection, entities, timeout=self.timeout_s))

    def delete(self, vector_ids: Sequence[str]) -> None:
        """Deletes the rows, then their ids from their objects' manifests (an empty manifest is deleted); a crash
        between the two leaves listed ids without rows, which ``rows_of`` drops."""
        if not vector_ids:
            return
        ids = list(vector_ids)
        subject = f"vector ids {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}"
        owners: dict[str, set[str]] = {}
        for e in self._get(subject, ids, ["id", "object_id"]):
            owners.setdefault(e["object_id"], set()).add(e["id"])
        self._call("delete", subject, lambda c: c.delete(self.collection, ids=ids, timeout=self.timeout_s))
        manifests = self._manifests.read(owners)
        shrunk = {oid: (m.vector_ids - owners[oid], m.pages) for oid, m in manifests.items()}
        self._manifests.write(shrunk)

    def rows_of(self, object_id: str) -> list[VectorRow]:
        """The object's rows (with vectors) by two primary-key gets: its manifest, then the rows it lists; flat in
        the collection's size. An object without a manifest in a collection made before them is scanned once."""
        manifest = self._manifests.read([object_id]).get(object_id)
        if manifest is None:
            if self._complete:
                return []
            rows = self._scan_rows(object_id)
            self._manifests.write({object_id: ({r.vector_id for r in rows}, 0)}, keep_empty=True)
            return rows
        fields = [*self._fields, "vector"]
        found = self._get(object_id, sorted(manifest.vector_ids), fields) if manifest.vector_ids else []
        rows = sorted((_to_row(e, None) for e in found), key=lambda r: (r.chunk_index, r.vector_id))
        rows = [r for r in rows if r.object_id == object_id]
        if len(rows) != len(manifest.vector_ids):  # ids a crash left without rows
            live = {r.vector_id for r in rows}
            self._manifests.write({object_id: (live, manifest.pages)}, keep_empty=not self._complete)
        return rows

    def _unlisted_ids(self, object_id: str) -> frozenset[str]:
        """The ids of an object that has no manifest: none in a collection made with manifests, else a scan's."""
        return frozenset() if self._complete else frozenset(r.vector_id for r in self._scan_rows(object_id))

    def _scan_rows(self, object_id: str) -> list[VectorRow]:
        """The object's rows by a filter on object_id: scans the collection (only for collections made before
        manifests)."""
        found = self._call(
            "query",
            object_id,
            lambda c: c.query(
                self.collection,
                filter=f"object_id == {filter_literal(object_id)}",
                output_fields=[*self._fields, "vector"],
                consistency_level=READ_YOUR_WRITES,  # fusion merges into what the last upsert wrote
                timeout=self.timeout_s,
            ),
        )
        return [_to_row(e, None) for e in found]

    def _get(self, subject: str, ids: list[str], fields: list[str]) -> list[dict[str, Any]]:
        """Rows by primary key (flat in the collection's size), as of every write acknowledged before."""
        found = self._call(
            "get",
            subject,
            lambda c: c.get(
                self.collection,
                ids=ids,
                output_fields=fields,
                consistency_level=READ_YOUR_WRITES,
                timeout=self.timeout_s,
            ),
        )
        return list(found)

    def count(self) -> int:
        found = self._call(
            "count",
            self.collection,
            lambda c: c.query(
                self.collection,
                filter='id != ""',
                output_fields=["count(*)"],
                consistency_level=READ_YOUR_WRITES,
                timeout=self.timeout_s,
            ),
        )
        return int(found[0]["count(*)"])

    def rows_version(self) -> int | None:
        return None  # another process (the updater) writes the collection: no cheap way to tell a change

    def shard_rows(self, shard: int, page: int = 1000) -> Iterator[VectorRow]:
        """The payload rows of ``shard`` (vectors empty), page by page (a query iterator: no offset limit)."""
        pages = self._call(
            "query",
            f"rows of shard {shard}",
            lambda c: c.query_iterator(
                self.collection,
                batch_size=page,
                filter=f"shard == {int(shard)}",
                output_fields=self._fields,
                consistency_level=READ_YOUR_WRITES,
                timeout=self.timeout_s,
            ),
        )
        while True:
            found = self._call("query", f"rows of shard {shard}", lambda c: pages.next())
            if not found:
                pages.close()
                return
            yield from (_to_row(e, None) for e in found)

    def search(
        self, query: np.ndarray, top_k: int, shard: int | None = None, where: SearchFilter = NO_FILTER
    ) -> list[Hit]:
        """Top-k by inner product; LIKE-narrowed conditions are post-filtered exactly, fetching up to ``_OVERFETCH``
        times more rows when the post-filter dropped some of a full answer."""
        vector = np.asarray(query, dtype=np.float32).tolist()
        return self._filtered(_Ask("search", vector, "vector", "IP"), top_k, shard, where)

    def keyword_support(self) -> KeywordSupport:
        return KeywordSupport.STORE if self._keywords else KeywordSupport.NONE

    def keyword_search(
        self, text: str, top_k: int, shard: int | None = None, where: SearchFilter = NO_FILTER
    ) -> list[Hit]:
        """Top-k by Milvus' BM25 over the rows' keyword tokens (the same tokens as the query's, ``analyzer_text``),
        filtered like ``search``; [] for a text without tokens. Raises RetryableError as every call does, and
        PermanentError for a collection made without the BM25 field (``keyword_support`` says so)."""
        if not self._keywords:
            raise PermanentError(
                STAGE,
                self.collection,
                "no BM25 field: keyword search needs a collection made with it",
                "search the side index (the retrieval worker does), or re-index into a new space (mmrag reindex)",
            )
        terms = analyzer_text(text)
        return self._filtered(_Ask("keyword search", terms, SPARSE, "BM25"), top_k, shard, where) if terms else []

    def _filtered(self, ask: _Ask, top_k: int, shard: int | None, where: SearchFilter) -> list[Hit]:
        if (
            where.matches_nothing
            or (where.content_types is not None and CONTENT_TYPE not in self._fields)
            or (where.readers is not None and READERS not in self._fields)
        ):
            return []  # "in []" matches nothing; Milvus need not be asked
        limit = top_k
        while True:
            found = self._search_once(ask, limit, shard, where)
            hits = [h for h in found if where.admits(h.row)]
            if len(hits) >= top_k or len(found) < limit or limit >= top_k * _OVERFETCH:
                return hits[:top_k]
            limit = min(top_k * _OVERFETCH, limit * 2)

    def _search_once(self, ask: _Ask, limit: int, shard: int | None, where: SearchFilter) -> list[Hit]:
        found = self._call(
            ask.what,
            f"{ask.what} of shard {shard}" if shard is not None else ask.what,
            lambda c: c.search(
                self.collection,
                data=[ask.data],
                anns_field=ask.field,
                limit=limit,
                filter=filter_expression(shard, where),
                output_fields=self._fields,
                search_params={"metric_type": ask.metric},
                consistency_level=READ_YOUR_WRITES,
                timeout=self.timeout_s,
            ),
        )
        # milvus-lite gives BM25 scores negated (best first all the same), Milvus as they are: relevance is positive
        score: Callable[[float], float] = abs if ask.metric == "BM25" else float
        return [Hit(_to_row(h["entity"], h["id"]), score(float(h["distance"]))) for h in found[0]]


@dataclass(frozen=True)
class _Ask:
    """One kind of Milvus search: its name in errors, the query (a vector or a text), the field and metric."""

    what: str
    data: list[float] | str
    field: str
    metric: str


def alias_target(client: MilvusClient, alias: str) -> str | None:
    """The collection ``alias`` points at, or None when no collection holds it."""
    if alias not in client.list_aliases().get("aliases", []):
        return None
    return str(client.describe_alias(alias)["collection_name"])


def move_alias(client: MilvusClient, alias: str, collection: str) -> str | None:
    """Points ``alias`` at ``collection`` in one step (alter_alias: a search sees the old or the new collection,
    never none); creates it when it points nowhere. Returns the collection it pointed at before."""
    if not client.has_collection(collection):
        raise RuntimeError(f"[milvus] cannot point {alias} at {collection}: no such collection -> check the space name")
    before = alias_target(client, alias)
    if before is None:
        client.create_alias(collection, alias)
    elif before != collection:
        client.alter_alias(collection, alias)
    return before


def _to_entity(row: VectorRow, fields: Sequence[str], keywords: bool) -> dict[str, Any]:
    entity = {
        "id": row.vector_id,
        "vector": np.asarray(row.vector, dtype=np.float32).tolist(),
        "object_id": row.object_id,
        "version": row.version,
        "text": fit_utf8(row.text, TEXT_MAX_BYTES),
        "chunk_index": row.chunk_index,
        "shard": row.shard,
        "char_start": row.char_start,
        "char_end": row.char_end,
        "page": row.page,
        "event_time_ms": row.event_time_ms,
        "indexed_at_ms": row.indexed_at_ms,
        "has_text": row.has_text,
        "has_image": row.has_image,
    }
    if CONTENT_TYPE in fields:
        entity[CONTENT_TYPE] = fit_utf8(row.content_type, CONTENT_TYPE_MAX_BYTES)
    if READERS in fields:
        entity[READERS] = list(row.readers)
    if keywords:
        entity[KEYWORDS] = fit_tokens(analyzer_text(row.text), TEXT_MAX_BYTES)
    return entity


def _to_row(entity: dict[str, Any], vid: str | None) -> VectorRow:
    vector = np.asarray(entity.get("vector", []), dtype=np.float32)
    return VectorRow(
        vector_id=vid or entity["id"],
        object_id=entity["object_id"],
        version=entity["version"],
        chunk_index=int(entity["chunk_index"]),
        shard=int(entity["shard"]),
        vector=vector,
        text=entity["text"],
        char_start=int(entity["char_start"]),
        char_end=int(entity["char_end"]),
        page=int(entity["page"]),
        has_text=bool(entity["has_text"]),
        has_image=bool(entity["has_image"]),
        event_time_ms=int(entity["event_time_ms"]),
        indexed_at_ms=int(entity["indexed_at_ms"]),
        content_type=str(entity.get(CONTENT_TYPE) or ""),
        readers=tuple(entity.get(READERS) or ()),
    )
