"""`python -m consumers.llm_worker`: answers llm.requests.v1 with streamed GenerateChunks (group llm-workers)."""

from __future__ import annotations

import sys

from consumers.llm_worker.generator import Generator
from consumers.llm_worker.llama_cpp_generator import LlamaCppGenerator
from consumers.llm_worker.openai_generator import OpenAIGenerator
from consumers.llm_worker.settings import LlmWorkerSettings
from consumers.llm_worker.worker import LlmWorker
from mmrag.service import service_main
from mmrag.telemetry import Probes


def make_generator(s: LlmWorkerSettings) -> Generator:
    """The configured backend, not loaded yet (``warm_up`` loads it)."""
    if s.llm_backend == "openai":
        return OpenAIGenerator(
            s.llm_base_url,
            s.llm_server_model,
            s.llm_api_key.get_secret_value(),
            s.llm_context_tokens,
            s.llm_http_timeout_s,
            s.llm_http_concurrency,
            s.llm_system_role,
        )
    name = s.llm_model if s.llm_model_path is None else s.llm_model_path.stem
    return LlamaCppGenerator(
        name,
        s.llm_threads,
        s.llm_context_tokens,
        s.llm_model_path,
        s.llm_chat_format,
        s.llm_system_role,
        threads_batch=s.llm_threads_batch,
    )


def build(settings: LlmWorkerSettings, probes: Probes) -> LlmWorker:
    return LlmWorker(settings, make_generator(settings), probes)


def main(argv: list[str] | None = None) -> int:
    return service_main("llm_worker", LlmWorkerSettings, build, argv)


if __name__ == "__main__":
    sys.exit(main())
