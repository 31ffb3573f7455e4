"""Settings of the LLM worker deployable (MMRAG_ prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from consumers.llm_worker.models import DEFAULT_MODEL, MODELS
from mmrag.settings import BaseServiceSettings


class LlmWorkerSettings(BaseServiceSettings):
    group: str = "llm-workers"
    llm_backend: Literal["llamacpp", "openai"] = "llamacpp"
    llm_model: str = Field(default=DEFAULT_MODEL, description=f"packaged GGUF for llamacpp: one of {list(MODELS)}")
    llm_model_path: Path | None = Field(default=None, description="a GGUF file instead of a packaged model")
    llm_threads: int = Field(
        default=1,
        ge=0,
        description="llama.cpp threads (0 = its default); more only on cores of its own: on a shared 2-core box a "
        "second thread spinning at llama.cpp's barriers made generation 8x slower (bench.llm_faithfulness --threads)",
    )
    llm_threads_batch: int = Field(
        default=2,
        ge=0,
        description="llama.cpp threads evaluating the prompt (0 = its default): the first token's cost is the "
        "prompt's, a compute-bound matrix product that splits over cores (bench.ask, FACTS)",
    )
    llm_context_tokens: int = Field(default=2048, ge=256, description="context window the prompt is trimmed to")
    llm_max_tokens: int = Field(default=256, ge=1, description="answer length cap (requests may ask for less)")
    llm_base_url: str = Field(default="http://127.0.0.1:8000/v1", description="openai backend: the /v1 base URL")
    llm_api_key: SecretStr = SecretStr("")
    llm_server_model: str = Field(default="", description="openai backend: model name; empty = the first listed")
    llm_http_timeout_s: float = 60.0
    llm_system_role: bool = Field(
        default=True, description="False: the instruction opens the user turn (templates without a system turn)"
    )
    llm_chat_format: str | None = Field(default=None, description="with llm_model_path: a llama-cpp-python format")
    llm_http_concurrency: int = Field(default=4, ge=1, description="openai backend: generations in flight at once")
    llm_heartbeat_interval_s: float = Field(
        default=0.5,
        gt=0,
        description="how often the worker says on llm.heartbeats.v1 that it is there (at once when it changes); "
        "the query service counts a worker absent after MMRAG_LLM_WORKER_MAX_AGE_S (2 s) without one",
    )
