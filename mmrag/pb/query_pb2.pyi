from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchQuery(_message.Message):
    __slots__ = ("text", "image", "top_k")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    top_k: int
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., top_k: _Optional[int] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("object_id", "vector_id", "version", "score", "text", "chunk_index", "char_start", "char_end", "page", "shard", "has_text", "has_image")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHAR_START_FIELD_NUMBER: _ClassVar[int]
    CHAR_END_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    HAS_TEXT_FIELD_NUMBER: _ClassVar[int]
    HAS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    vector_id: str
    version: str
    score: float
    text: str
    chunk_index: int
    char_start: int
    char_end: int
    page: int
    shard: int
    has_text: bool
    has_image: bool
    def __init__(self, object_id: _Optional[str] = ..., vector_id: _Optional[str] = ..., version: _Optional[str] = ..., score: _Optional[float] = ..., text: _Optional[str] = ..., chunk_index: _Optional[int] = ..., char_start: _Optional[int] = ..., char_end: _Optional[int] = ..., page: _Optional[int] = ..., shard: _Optional[int] = ..., has_text: _Optional[bool] = ..., has_image: _Optional[bool] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results", "partial", "missing_shards", "space_id")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    SPACE_ID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    partial: bool
    missing_shards: _containers.RepeatedScalarFieldContainer[int]
    space_id: str
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., partial: _Optional[bool] = ..., missing_shards: _Optional[_Iterable[int]] = ..., space_id: _Optional[str] = ...) -> None: ...

class AskRequest(_message.Message):
    __slots__ = ("question", "top_k")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    question: str
    top_k: int
    def __init__(self, question: _Optional[str] = ..., top_k: _Optional[int] = ...) -> None: ...

class AskResponse(_message.Message):
    __slots__ = ("answer", "citations", "is_degraded")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    IS_DEGRADED_FIELD_NUMBER: _ClassVar[int]
    answer: str
    citations: _containers.RepeatedCompositeFieldContainer[SearchResult]
    is_degraded: bool
    def __init__(self, answer: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., is_degraded: _Optional[bool] = ...) -> None: ...

class ObjectStatusRequest(_message.Message):
    __slots__ = ("object_id",)
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    def __init__(self, object_id: _Optional[str] = ...) -> None: ...

class ObjectStatusResponse(_message.Message):
    __slots__ = ("object_id", "version", "state", "indexed_at_ms")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INDEXED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    version: str
    state: str
    indexed_at_ms: int
    def __init__(self, object_id: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[str] = ..., indexed_at_ms: _Optional[int] = ...) -> None: ...
