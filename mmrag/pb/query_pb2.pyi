from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchQuery(_message.Message):
    __slots__ = ("text", "image", "top_k", "raw_chunks", "filter")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RAW_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    top_k: int
    raw_chunks: bool
    filter: Filter
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., top_k: _Optional[int] = ..., raw_chunks: _Optional[bool] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("buckets", "key_prefix", "modality", "content_types", "event_time_from_ms", "event_time_to_ms", "object_ids")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FROM_MS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_TO_MS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedScalarFieldContainer[str]
    key_prefix: str
    modality: str
    content_types: _containers.RepeatedScalarFieldContainer[str]
    event_time_from_ms: int
    event_time_to_ms: int
    object_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, buckets: _Optional[_Iterable[str]] = ..., key_prefix: _Optional[str] = ..., modality: _Optional[str] = ..., content_types: _Optional[_Iterable[str]] = ..., event_time_from_ms: _Optional[int] = ..., event_time_to_ms: _Optional[int] = ..., object_ids: _Optional[_Iterable[str]] = ...) -> None: ...

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
    __slots__ = ("results", "partial", "missing_shards", "space_id", "from_cache", "degraded", "space_name")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    SPACE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    SPACE_NAME_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    partial: bool
    missing_shards: _containers.RepeatedScalarFieldContainer[int]
    space_id: str
    from_cache: bool
    degraded: str
    space_name: str
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., partial: _Optional[bool] = ..., missing_shards: _Optional[_Iterable[int]] = ..., space_id: _Optional[str] = ..., from_cache: _Optional[bool] = ..., degraded: _Optional[str] = ..., space_name: _Optional[str] = ...) -> None: ...

class AskRequest(_message.Message):
    __slots__ = ("question", "top_k", "max_tokens", "filter")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    question: str
    top_k: int
    max_tokens: int
    filter: Filter
    def __init__(self, question: _Optional[str] = ..., top_k: _Optional[int] = ..., max_tokens: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class AskResponse(_message.Message):
    __slots__ = ("sources", "delta", "final")
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    sources: AskSources
    delta: AskDelta
    final: AskFinal
    def __init__(self, sources: _Optional[_Union[AskSources, _Mapping]] = ..., delta: _Optional[_Union[AskDelta, _Mapping]] = ..., final: _Optional[_Union[AskFinal, _Mapping]] = ...) -> None: ...

class AskSource(_message.Message):
    __slots__ = ("number", "object_id", "snippet", "score", "modality", "version", "page", "char_start", "char_end", "chunk_index")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    CHAR_START_FIELD_NUMBER: _ClassVar[int]
    CHAR_END_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    number: int
    object_id: str
    snippet: str
    score: float
    modality: str
    version: str
    page: int
    char_start: int
    char_end: int
    chunk_index: int
    def __init__(self, number: _Optional[int] = ..., object_id: _Optional[str] = ..., snippet: _Optional[str] = ..., score: _Optional[float] = ..., modality: _Optional[str] = ..., version: _Optional[str] = ..., page: _Optional[int] = ..., char_start: _Optional[int] = ..., char_end: _Optional[int] = ..., chunk_index: _Optional[int] = ...) -> None: ...

class AskSources(_message.Message):
    __slots__ = ("sources", "partial", "missing_shards", "space_id", "from_cache", "degraded", "space_name")
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARDS_FIELD_NUMBER: _ClassVar[int]
    SPACE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    SPACE_NAME_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedCompositeFieldContainer[AskSource]
    partial: bool
    missing_shards: _containers.RepeatedScalarFieldContainer[int]
    space_id: str
    from_cache: bool
    degraded: str
    space_name: str
    def __init__(self, sources: _Optional[_Iterable[_Union[AskSource, _Mapping]]] = ..., partial: _Optional[bool] = ..., missing_shards: _Optional[_Iterable[int]] = ..., space_id: _Optional[str] = ..., from_cache: _Optional[bool] = ..., degraded: _Optional[str] = ..., space_name: _Optional[str] = ...) -> None: ...

class AskDelta(_message.Message):
    __slots__ = ("text", "provisional")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROVISIONAL_FIELD_NUMBER: _ClassVar[int]
    text: str
    provisional: bool
    def __init__(self, text: _Optional[str] = ..., provisional: _Optional[bool] = ...) -> None: ...

class AskTimings(_message.Message):
    __slots__ = ("retrieve_ms", "first_token_ms", "total_ms")
    RETRIEVE_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    retrieve_ms: float
    first_token_ms: float
    total_ms: float
    def __init__(self, retrieve_ms: _Optional[float] = ..., first_token_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class AskFinal(_message.Message):
    __slots__ = ("answer", "citations", "timings", "is_degraded", "degraded_reason", "model", "finish_reason", "prompt_tokens", "completion_tokens", "citations_inferred", "from_cache")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    IS_DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_INFERRED_FIELD_NUMBER: _ClassVar[int]
    FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    answer: str
    citations: _containers.RepeatedCompositeFieldContainer[AskSource]
    timings: AskTimings
    is_degraded: bool
    degraded_reason: str
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    citations_inferred: bool
    from_cache: bool
    def __init__(self, answer: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[AskSource, _Mapping]]] = ..., timings: _Optional[_Union[AskTimings, _Mapping]] = ..., is_degraded: _Optional[bool] = ..., degraded_reason: _Optional[str] = ..., model: _Optional[str] = ..., finish_reason: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., citations_inferred: _Optional[bool] = ..., from_cache: _Optional[bool] = ...) -> None: ...

class ObjectStatusRequest(_message.Message):
    __slots__ = ("object_id",)
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    def __init__(self, object_id: _Optional[str] = ...) -> None: ...

class ObjectStatusResponse(_message.Message):
    __slots__ = ("object_id", "version", "state", "indexed_at_ms", "space_id", "event_time_ms", "freshness_ms", "detail", "failed_stage", "error_class", "fix", "dlq_offset", "text_chunks", "image_vectors")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INDEXED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SPACE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FAILED_STAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    FIX_FIELD_NUMBER: _ClassVar[int]
    DLQ_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TEXT_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    version: str
    state: str
    indexed_at_ms: int
    space_id: str
    event_time_ms: int
    freshness_ms: int
    detail: str
    failed_stage: str
    error_class: str
    fix: str
    dlq_offset: int
    text_chunks: int
    image_vectors: int
    def __init__(self, object_id: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[str] = ..., indexed_at_ms: _Optional[int] = ..., space_id: _Optional[str] = ..., event_time_ms: _Optional[int] = ..., freshness_ms: _Optional[int] = ..., detail: _Optional[str] = ..., failed_stage: _Optional[str] = ..., error_class: _Optional[str] = ..., fix: _Optional[str] = ..., dlq_offset: _Optional[int] = ..., text_chunks: _Optional[int] = ..., image_vectors: _Optional[int] = ...) -> None: ...
