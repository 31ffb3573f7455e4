from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MediaKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEDIA_KIND_UNSPECIFIED: _ClassVar[MediaKind]
    MEDIA_KIND_TEXT: _ClassVar[MediaKind]
    MEDIA_KIND_IMAGE: _ClassVar[MediaKind]
    MEDIA_KIND_DOCUMENT: _ClassVar[MediaKind]
    MEDIA_KIND_UNSUPPORTED: _ClassVar[MediaKind]

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    MODALITY_TEXT: _ClassVar[Modality]
    MODALITY_IMAGE: _ClassVar[Modality]

class IndexState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_STATE_UNSPECIFIED: _ClassVar[IndexState]
    INDEX_STATE_INDEXED: _ClassVar[IndexState]
    INDEX_STATE_DELETED: _ClassVar[IndexState]
    INDEX_STATE_SKIPPED: _ClassVar[IndexState]
    INDEX_STATE_FAILED: _ClassVar[IndexState]
    INDEX_STATE_EXPIRED: _ClassVar[IndexState]
MEDIA_KIND_UNSPECIFIED: MediaKind
MEDIA_KIND_TEXT: MediaKind
MEDIA_KIND_IMAGE: MediaKind
MEDIA_KIND_DOCUMENT: MediaKind
MEDIA_KIND_UNSUPPORTED: MediaKind
MODALITY_UNSPECIFIED: Modality
MODALITY_TEXT: Modality
MODALITY_IMAGE: Modality
INDEX_STATE_UNSPECIFIED: IndexState
INDEX_STATE_INDEXED: IndexState
INDEX_STATE_DELETED: IndexState
INDEX_STATE_SKIPPED: IndexState
INDEX_STATE_FAILED: IndexState
INDEX_STATE_EXPIRED: IndexState

class ObjectEvent(_message.Message):
    __slots__ = ("object_id", "bucket", "key", "version", "version_id", "etag", "sequencer", "size", "content_type", "media_kind", "event_time_ms", "source", "event_name", "readers", "readers_only")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    SEQUENCER_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_KIND_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    READERS_FIELD_NUMBER: _ClassVar[int]
    READERS_ONLY_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    bucket: str
    key: str
    version: str
    version_id: str
    etag: str
    sequencer: str
    size: int
    content_type: str
    media_kind: MediaKind
    event_time_ms: int
    source: str
    event_name: str
    readers: _containers.RepeatedScalarFieldContainer[str]
    readers_only: bool
    def __init__(self, object_id: _Optional[str] = ..., bucket: _Optional[str] = ..., key: _Optional[str] = ..., version: _Optional[str] = ..., version_id: _Optional[str] = ..., etag: _Optional[str] = ..., sequencer: _Optional[str] = ..., size: _Optional[int] = ..., content_type: _Optional[str] = ..., media_kind: _Optional[_Union[MediaKind, str]] = ..., event_time_ms: _Optional[int] = ..., source: _Optional[str] = ..., event_name: _Optional[str] = ..., readers: _Optional[_Iterable[str]] = ..., readers_only: _Optional[bool] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("index", "text", "char_start", "char_end", "page", "vector", "clip_text_vector")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHAR_START_FIELD_NUMBER: _ClassVar[int]
    CHAR_END_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    CLIP_TEXT_VECTOR_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    char_start: int
    char_end: int
    page: int
    vector: _containers.RepeatedScalarFieldContainer[float]
    clip_text_vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., char_start: _Optional[int] = ..., char_end: _Optional[int] = ..., page: _Optional[int] = ..., vector: _Optional[_Iterable[float]] = ..., clip_text_vector: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbeddingBatch(_message.Message):
    __slots__ = ("object_id", "version", "modality", "model_id", "dim", "chunks", "event_time_ms", "sequencer", "deleted", "media_kind", "content_type", "embedded_at_ms", "clip_model_id", "expired", "readers", "readers_only")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCER_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    MEDIA_KIND_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CLIP_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    READERS_FIELD_NUMBER: _ClassVar[int]
    READERS_ONLY_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    version: str
    modality: Modality
    model_id: str
    dim: int
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    event_time_ms: int
    sequencer: str
    deleted: bool
    media_kind: MediaKind
    content_type: str
    embedded_at_ms: int
    clip_model_id: str
    expired: bool
    readers: _containers.RepeatedScalarFieldContainer[str]
    readers_only: bool
    def __init__(self, object_id: _Optional[str] = ..., version: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., model_id: _Optional[str] = ..., dim: _Optional[int] = ..., chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ..., event_time_ms: _Optional[int] = ..., sequencer: _Optional[str] = ..., deleted: _Optional[bool] = ..., media_kind: _Optional[_Union[MediaKind, str]] = ..., content_type: _Optional[str] = ..., embedded_at_ms: _Optional[int] = ..., clip_model_id: _Optional[str] = ..., expired: _Optional[bool] = ..., readers: _Optional[_Iterable[str]] = ..., readers_only: _Optional[bool] = ...) -> None: ...

class VectorRecord(_message.Message):
    __slots__ = ("vector_id", "object_id", "version", "chunk_index", "shard", "space_id", "vector", "text", "char_start", "char_end", "page", "event_time_ms", "indexed_at_ms", "has_text", "has_image", "content_type", "readers")
    VECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    SPACE_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHAR_START_FIELD_NUMBER: _ClassVar[int]
    CHAR_END_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    INDEXED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    HAS_TEXT_FIELD_NUMBER: _ClassVar[int]
    HAS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    READERS_FIELD_NUMBER: _ClassVar[int]
    vector_id: str
    object_id: str
    version: str
    chunk_index: int
    shard: int
    space_id: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    text: str
    char_start: int
    char_end: int
    page: int
    event_time_ms: int
    indexed_at_ms: int
    has_text: bool
    has_image: bool
    content_type: str
    readers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vector_id: _Optional[str] = ..., object_id: _Optional[str] = ..., version: _Optional[str] = ..., chunk_index: _Optional[int] = ..., shard: _Optional[int] = ..., space_id: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., text: _Optional[str] = ..., char_start: _Optional[int] = ..., char_end: _Optional[int] = ..., page: _Optional[int] = ..., event_time_ms: _Optional[int] = ..., indexed_at_ms: _Optional[int] = ..., has_text: _Optional[bool] = ..., has_image: _Optional[bool] = ..., content_type: _Optional[str] = ..., readers: _Optional[_Iterable[str]] = ...) -> None: ...

class IndexStatus(_message.Message):
    __slots__ = ("object_id", "version", "space_id", "state", "text_chunks", "image_vectors", "event_time_ms", "indexed_at_ms", "detail", "modality", "readers")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SPACE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TEXT_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    INDEXED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    READERS_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    version: str
    space_id: str
    state: IndexState
    text_chunks: int
    image_vectors: int
    event_time_ms: int
    indexed_at_ms: int
    detail: str
    modality: Modality
    readers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, object_id: _Optional[str] = ..., version: _Optional[str] = ..., space_id: _Optional[str] = ..., state: _Optional[_Union[IndexState, str]] = ..., text_chunks: _Optional[int] = ..., image_vectors: _Optional[int] = ..., event_time_ms: _Optional[int] = ..., indexed_at_ms: _Optional[int] = ..., detail: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., readers: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchList(_message.Message):
    __slots__ = ("name", "query_vector", "keyword", "half")
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    HALF_FIELD_NUMBER: _ClassVar[int]
    name: str
    query_vector: _containers.RepeatedScalarFieldContainer[float]
    keyword: bool
    half: Modality
    def __init__(self, name: _Optional[str] = ..., query_vector: _Optional[_Iterable[float]] = ..., keyword: _Optional[bool] = ..., half: _Optional[_Union[Modality, str]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("correlation_id", "space_id", "query_vector", "top_k", "query_text", "object_ids", "modality", "raw_chunks", "buckets", "key_prefix", "content_types", "event_time_from_ms", "event_time_to_ms", "keyword", "space_name", "lists", "restricted", "reader_tokens")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    SPACE_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXT_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    RAW_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FROM_MS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_TO_MS_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    SPACE_NAME_FIELD_NUMBER: _ClassVar[int]
    LISTS_FIELD_NUMBER: _ClassVar[int]
    RESTRICTED_FIELD_NUMBER: _ClassVar[int]
    READER_TOKENS_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    space_id: str
    query_vector: _containers.RepeatedScalarFieldContainer[float]
    top_k: int
    query_text: str
    object_ids: _containers.RepeatedScalarFieldContainer[str]
    modality: Modality
    raw_chunks: bool
    buckets: _containers.RepeatedScalarFieldContainer[str]
    key_prefix: str
    content_types: _containers.RepeatedScalarFieldContainer[str]
    event_time_from_ms: int
    event_time_to_ms: int
    keyword: bool
    space_name: str
    lists: _containers.RepeatedCompositeFieldContainer[SearchList]
    restricted: bool
    reader_tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, correlation_id: _Optional[str] = ..., space_id: _Optional[str] = ..., query_vector: _Optional[_Iterable[float]] = ..., top_k: _Optional[int] = ..., query_text: _Optional[str] = ..., object_ids: _Optional[_Iterable[str]] = ..., modality: _Optional[_Union[Modality, str]] = ..., raw_chunks: _Optional[bool] = ..., buckets: _Optional[_Iterable[str]] = ..., key_prefix: _Optional[str] = ..., content_types: _Optional[_Iterable[str]] = ..., event_time_from_ms: _Optional[int] = ..., event_time_to_ms: _Optional[int] = ..., keyword: _Optional[bool] = ..., space_name: _Optional[str] = ..., lists: _Optional[_Iterable[_Union[SearchList, _Mapping]]] = ..., restricted: _Optional[bool] = ..., reader_tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class ListHits(_message.Message):
    __slots__ = ("name", "hits", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    error: str
    def __init__(self, name: _Optional[str] = ..., hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("vector_id", "object_id", "version", "score", "text", "chunk_index", "char_start", "char_end", "page", "has_text", "has_image")
    VECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHAR_START_FIELD_NUMBER: _ClassVar[int]
    CHAR_END_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    HAS_TEXT_FIELD_NUMBER: _ClassVar[int]
    HAS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    vector_id: str
    object_id: str
    version: str
    score: float
    text: str
    chunk_index: int
    char_start: int
    char_end: int
    page: int
    has_text: bool
    has_image: bool
    def __init__(self, vector_id: _Optional[str] = ..., object_id: _Optional[str] = ..., version: _Optional[str] = ..., score: _Optional[float] = ..., text: _Optional[str] = ..., chunk_index: _Optional[int] = ..., char_start: _Optional[int] = ..., char_end: _Optional[int] = ..., page: _Optional[int] = ..., has_text: _Optional[bool] = ..., has_image: _Optional[bool] = ...) -> None: ...

class SearchReply(_message.Message):
    __slots__ = ("correlation_id", "shard", "hits", "error", "space_id", "space_name", "lists")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SPACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPACE_NAME_FIELD_NUMBER: _ClassVar[int]
    LISTS_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    shard: int
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    error: str
    space_id: str
    space_name: str
    lists: _containers.RepeatedCompositeFieldContainer[ListHits]
    def __init__(self, correlation_id: _Optional[str] = ..., shard: _Optional[int] = ..., hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., error: _Optional[str] = ..., space_id: _Optional[str] = ..., space_name: _Optional[str] = ..., lists: _Optional[_Iterable[_Union[ListHits, _Mapping]]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("correlation_id", "question", "max_tokens", "instruction", "sources", "temperature", "top_p", "deadline_ms")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    question: str
    max_tokens: int
    instruction: str
    sources: _containers.RepeatedCompositeFieldContainer[PromptSource]
    temperature: float
    top_p: float
    deadline_ms: int
    def __init__(self, correlation_id: _Optional[str] = ..., question: _Optional[str] = ..., max_tokens: _Optional[int] = ..., instruction: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[PromptSource, _Mapping]]] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class PromptSource(_message.Message):
    __slots__ = ("number", "label", "text", "modality")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    number: int
    label: str
    text: str
    modality: Modality
    def __init__(self, number: _Optional[int] = ..., label: _Optional[str] = ..., text: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ...) -> None: ...

class GenerateChunk(_message.Message):
    __slots__ = ("correlation_id", "seq", "text", "final", "error", "prompt_tokens", "completion_tokens", "finish_reason", "model", "sources_given")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SOURCES_GIVEN_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    seq: int
    text: str
    final: bool
    error: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    model: str
    sources_given: int
    def __init__(self, correlation_id: _Optional[str] = ..., seq: _Optional[int] = ..., text: _Optional[str] = ..., final: _Optional[bool] = ..., error: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., finish_reason: _Optional[str] = ..., model: _Optional[str] = ..., sources_given: _Optional[int] = ...) -> None: ...
