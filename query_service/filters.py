"""A Search's or an Ask's scope as the public API states it (`query.proto` Filter, raw_chunks), checked and turned
into the SearchRequest fields every retrieval worker applies the same way (see mmrag.vector_index.SearchFilter).

Invalid input raises FilterError naming the field, which the server answers with INVALID_ARGUMENT."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mmrag.pb.events_pb2 import Modality, SearchRequest
from mmrag.pb.query_pb2 import Filter
from mmrag.vector_index import media_type
from query_service.callers import Caller

MAX_LISTED = 1000  # object ids, buckets or content types in one filter: the request travels over Kafka
MAX_KEY_BYTES = 1024  # S3's key limit
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3's bucket naming rules (MinIO and Ceph follow them)
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_MODALITIES = {"": Modality.MODALITY_UNSPECIFIED, "text": Modality.MODALITY_TEXT, "image": Modality.MODALITY_IMAGE}


class FilterError(ValueError):
    """An invalid filter; ``field`` names it as the API spells it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class Scope:
    """What a search may return, checked: the SearchRequest's filter fields and its grouping."""

    raw_chunks: bool = False
    object_ids: tuple[str, ...] = ()
    modality: int = Modality.MODALITY_UNSPECIFIED
    buckets: tuple[str, ...] = ()
    key_prefix: str = ""
    content_types: tuple[str, ...] = ()
    event_time_from_ms: int = 0
    event_time_to_ms: int = 0
    # the caller's reader tokens (every shard searches only rows sharing one; () = none); None = unrestricted (auth
    # off). Part of the caches' keys: a cached result or answer serves only callers of the same tokens.
    readers: tuple[str, ...] | None = None

    def fill(self, request: SearchRequest) -> SearchRequest:
        """Sets these fields on ``request`` and returns it."""
        request.raw_chunks = self.raw_chunks
        request.object_ids[:] = self.object_ids
        request.modality = self.modality  # type: ignore[assignment]
        request.buckets[:] = self.buckets
        request.key_prefix = self.key_prefix
        request.content_types[:] = self.content_types
        request.event_time_from_ms = self.event_time_from_ms
        request.event_time_to_ms = self.event_time_to_ms
        request.restricted = self.readers is not None
        request.reader_tokens[:] = self.readers or ()
        return request


def scope_of(f: Filter, raw_chunks: bool = False, *, caller: Caller) -> Scope:
    """The checked scope of a public Filter, within what ``caller`` may see (an unrestricted caller: everything);
    raises FilterError naming the first invalid field."""
    return Scope(
        readers=None if caller.unrestricted else tuple(sorted(caller.reader_tokens())),
        raw_chunks=raw_chunks,
        object_ids=_listed("filter.object_ids", f.object_ids, _object_id_problem),
        modality=_modality(f.modality),
        buckets=_listed("filter.buckets", f.buckets, _bucket_problem),
        key_prefix=_key_prefix(f.key_prefix),
        content_types=tuple(
            media_type(t) for t in _listed("filter.content_types", f.content_types, _media_type_problem)
        ),
        event_time_from_ms=_time("filter.event_time_from_ms", f.event_time_from_ms),
        event_time_to_ms=_checked_range(f.event_time_from_ms, _time("filter.event_time_to_ms", f.event_time_to_ms)),
    )


def _listed(field: str, values: Sequence[str], problem_of: Callable[[str], str]) -> tuple[str, ...]:
    if len(values) > MAX_LISTED:
        raise FilterError(field, f"{len(values)} values, at most {MAX_LISTED}")
    for i, value in enumerate(values):
        problem = problem_of(value)
        if problem:
            raise FilterError(f"{field}[{i}]", f"{value!r} {problem}")
    return tuple(dict.fromkeys(values))


def _object_id_problem(value: str) -> str:
    bucket, slash, key = value.partition("/")
    if not slash or not bucket or not key:
        return "is not an object id: write bucket/key"
    return "is longer than an S3 key may be" if len(key.encode()) > MAX_KEY_BYTES else ""


def _bucket_problem(value: str) -> str:
    return "" if _BUCKET.match(value) else "is not an S3 bucket name (3-63 characters of a-z, 0-9, '.', '-')"


def _media_type_problem(value: str) -> str:
    return "" if _MEDIA_TYPE.match(media_type(value)) else "is not a media type such as text/markdown or image/png"


def _modality(value: str) -> int:
    found = _MODALITIES.get(value.strip().lower())
    if found is None:
        raise FilterError("filter.modality", f"{value!r} is not one of 'text', 'image' (or empty for both)")
    return found


def _key_prefix(value: str) -> str:
    if len(value.encode()) > MAX_KEY_BYTES:
        raise FilterError("filter.key_prefix", f"{len(value.encode())} bytes, an S3 key has at most {MAX_KEY_BYTES}")
    return value


def _time(field: str, value: int) -> int:
    if value < 0:
        raise FilterError(field, f"{value} is before 1970; give epoch milliseconds (0 = no bound)")
    return value


def _checked_range(start: int, end: int) -> int:
    if start and end and end <= start:
        raise FilterError("filter.event_time_to_ms", f"{end} is not after event_time_from_ms {start}")
    return end
