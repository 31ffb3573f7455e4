"""The query service's settings (MMRAG_* environment variables): at the package's bottom, imported by every module
that reads them and importing none of them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmrag.grpc_tls import GrpcTlsSettings
from mmrag.settings import BaseServiceSettings, SpaceSettings, VectorStoreSettings
from query_service.auth_settings import AuthSettings


class QueryServiceSettings(BaseServiceSettings, SpaceSettings, VectorStoreSettings, GrpcTlsSettings, AuthSettings):
    grpc_host: str = Field(default="127.0.0.1", description="address the gRPC server binds (0.0.0.0 for all)")
    grpc_port: int = Field(default=50051, description="gRPC port; taken = an error at start")
    reply_partition: int = Field(default=0, ge=0, description="the reply partition this replica owns")
    search_timeout_s: float = Field(default=2.0, description="deadline for the shards' replies (then partial)")
    default_top_k: int = Field(default=10, description="hits when a query asks for 0")
    max_top_k: int = Field(default=100, description="largest top_k a query may ask for")
    grpc_workers: int = Field(default=8, description="gRPC server threads (concurrent calls)")
    fusion: Literal["modality", "joint"] = Field(
        default="modality",
        description="modality: a text list and an image list, the one CLIP puts the query closer to first; joint: "
        "one list by the joint vector's weighted cosines (images crowd text answers with a badly calibrated CLIP)",
    )
    max_query_image_bytes: int = Field(
        default=16 << 20,
        ge=1,
        description="largest image a Search takes; gRPC takes 1 MiB more per request so a larger one is answered "
        "INVALID_ARGUMENT naming this limit (gRPC's own 4 MiB default refused before the service could say why)",
    )
    space_refresh_s: float = Field(
        default=1.0,
        ge=0,
        description="seconds between looks at the live alias: queries follow a swap to the space it names (encoded "
        "with that space's models); 0 = serve the configured space only (no Milvus, e.g. Faiss alone)",
    )
    keyword_search: bool = Field(
        default=True,
        description="also ask the shards' keyword (BM25) indexes: hybrid ranking, and the answer when the vector "
        "index fails (degraded=keyword)",
    )
    # caches (query_service/caches.py); 0 turns one off
    embedding_cache_size: int = Field(default=4096, ge=0, description="query texts/images whose vectors are kept")
    result_cache_size: int = Field(default=4096, ge=0, description="complete search answers kept")
    result_cache_ttl_s: float = Field(default=5.0, ge=0, description="a kept answer answers the same query this long")
    shard_presence_interval_s: float = Field(
        default=1.0,
        description="how often the shards' consumer groups are looked at (a shard without a worker is "
        "missing at once, not at the deadline)",
    )
    result_cache_stale_s: float = Field(
        default=300.0, ge=0, description="when retrieval times out, a kept answer this old is given instead"
    )
    # Ask answer cache (query_service/answer_cache.py): a close question in the same scope, no source changed since
    answer_cache_size: int = Field(default=1024, ge=0, description="answers kept (0 = no answer cache)")
    answer_cache_similarity: float = Field(
        default=0.97, gt=0, le=1, description="least cosine between two questions' query vectors to share an answer"
    )
    answer_cache_ttl_s: float = Field(
        default=900.0, gt=0, description="an answer is served this long at most (a source changing drops it at once)"
    )
    cache_redis_url: str = Field(
        default="", description="redis://host:port/db: the answer cache in Redis, shared by replicas; '' = in process"
    )
    # Ask: sources, generation through llm.requests.v1, the breaker and the degraded answer
    ask_timeout_s: float = Field(default=60.0, description="an Ask's whole budget when the client sets no deadline")
    ask_max_sources: int = Field(default=3, ge=1, description="numbered sources (one per object) given to the LLM")
    ask_chunks_per_source: int = Field(default=2, ge=1, description="best chunks of one object joined in a source")
    ask_label_bucket: bool = Field(
        default=False, description="label the LLM's sources bucket/key; False: the key alone (fewer prompt tokens)"
    )
    ask_source_words: int = Field(
        default=25,
        ge=0,
        description="a text source longer than this is focused on the question: its best-matching sentences "
        "within this many words (the first token costs every prompt token: bench.ask); 0 = whole chunks",
    )
    ask_max_tokens: int = Field(default=256, ge=1, description="the most answer tokens an Ask may ask for; its default")
    ask_max_question_chars: int = Field(
        default=2000, ge=1, description="a longer question is refused (INVALID_ARGUMENT): it would not fit the prompt"
    )
    # Calibrated by `python -m bench.ask_min_score` (33 documents, 49 answered vs 12 off-topic questions): answered
    # best scores 0.128-0.469, off-topic 0.051-0.167 (10 of 12 under 0.125). 0.12 keeps every answered question
    # (a false "not found" is worse than a generation the grounding check can still catch) and stops 8 of 12.
    ask_min_score: float = Field(default=0.12, description="best hit under it: 'not found', no LLM generation")
    # Calibrated by `python -m bench.answers` (docs/architecture.md "Answers"): MiniLM cosines of an answer's
    # sentence with the source sentence that says it, and of the question with a sentence that answers it.
    ask_support_min: float = Field(
        default=0.6, description="an answer sentence at least this close to a source sentence is supported by it"
    )
    ask_answer_min: float = Field(
        default=0.65, description="a source sentence at least this close to the question answers it (else not found)"
    )
    llm_first_token_timeout_s: float = Field(default=10.0, description="slower counts as a failure: degrade")
    llm_stall_timeout_s: float = Field(default=5.0, description="longest gap between two answer chunks")
    llm_breaker_fail_max: int = Field(default=3, ge=1, description="consecutive LLM failures that open the breaker")
    llm_breaker_reset_s: float = Field(default=15.0, description="open this long, then requests probe (half-open)")
    llm_worker_max_age_s: float = Field(
        default=2.0,
        gt=0,
        description="an LLM worker whose last heartbeat (llm.heartbeats.v1) is older is absent: with none left, Asks "
        "degrade at once (no-llm-worker); workers beat every MMRAG_LLM_HEARTBEAT_INTERVAL_S",
    )
