"""The chat prompt of a GenerateRequest: numbered sources trimmed to the model's context by its own tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consumers.llm_worker.generator import ChatMessage
from mmrag.pb.events_pb2 import GenerateRequest

# Room for the chat template's own tokens (role markers, turn separators) around the messages.
TEMPLATE_TOKENS = 48
# A source cut below this many tokens says too little to cite: it is dropped instead.
MIN_SOURCE_TOKENS = 32

CountTokens = Callable[[str], int]


@dataclass(frozen=True)
class Prompt:
    messages: list[ChatMessage]
    sources_given: int  # how many leading sources fit


def trim_to_tokens(text: str, limit: int, count: CountTokens) -> str:
    """The longest prefix of ``text`` (cut at a word boundary when there is one) that, with the " …" marking the
    cut, has at most ``limit`` tokens."""
    if count(text) <= limit:
        return text
    low, high = 0, len(text)
    while low < high:  # the longest character prefix that fits beside the cut mark
        mid = (low + high + 1) // 2
        if count(text[:mid]) <= limit - 1:
            low = mid
        else:
            high = mid - 1
    cut = text[:low]
    space = cut.rfind(" ")
    return (cut[:space] if space > low // 2 else cut).rstrip() + " …"


def source_block(number: int, label: str, text: str) -> str:
    return f"[{number}] {label}\n{text.strip()}\n\n"


def build_prompt(request: GenerateRequest, max_tokens: int, context_tokens: int, count: CountTokens) -> Prompt:
    """Sources in the order given (best first); the ones that do not fit the context are dropped from the end,
    the last one that partly fits is cut. Raises ValueError when not even the question fits."""
    question = f"Question: {request.question.strip()}\nAnswer:"
    budget = context_tokens - max_tokens - TEMPLATE_TOKENS - count(request.instruction) - count(question)
    if budget < 0:
        raise ValueError(f"the question alone needs more than the model's {context_tokens}-token context")
    blocks: list[str] = []
    for source in request.sources:
        block = source_block(source.number, source.label, source.text)
        cost = count(block)
        if cost > budget:
            room = budget - count(source_block(source.number, source.label, "")) - 2
            if room >= MIN_SOURCE_TOKENS:
                blocks.append(source_block(source.number, source.label, trim_to_tokens(source.text, room, count)))
            break
        blocks.append(block)
        budget -= cost
    user = ("Sources:\n\n" + "".join(blocks) if blocks else "No sources were found.\n\n") + question
    messages = [ChatMessage("system", request.instruction)] if request.instruction else []
    return Prompt([*messages, ChatMessage("user", user)], len(blocks))
