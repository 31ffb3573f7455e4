"""`mmrag ask "question"`: asks the query service, prints the sources, streams the answer as it is generated,
then the citations it used, the timings and whether it is degraded; `--json`: one JSON object of all that, once
the answer is complete."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from mmrag.grpc_tls import query_channel
from mmrag.pb import query_pb2, query_pb2_grpc
from operator_cli.connection import (
    CommandError,
    OperatorSettings,
    add_json_flag,
    add_token_flag,
    console,
    friendly,
    print_json,
)
from operator_cli.query_filter import add_filter_flags, filter_of


def sources_table(sources: query_pb2.AskSources) -> Table:
    title = "sources" + (f" (partial: shards {list(sources.missing_shards)} missing)" if sources.partial else "")
    table = Table(title=title, title_justify="left")
    for column in ("#", "score", "object", "kind", "snippet"):
        table.add_column(column)
    for s in sources.sources:
        table.add_row(f"[{s.number}]", f"{s.score:.3f}", s.object_id, s.modality, s.snippet[:80].replace("\n", " "))
    return table


def footer(final: query_pb2.AskFinal) -> str:
    t = final.timings
    cited = ", ".join(f"[{c.number}] {c.object_id}" for c in final.citations) or "none"
    lines = [
        f"cited: {cited}",
        f"retrieve {t.retrieve_ms:.0f} ms, first token {t.first_token_ms:.0f} ms, total {t.total_ms:.0f} ms"
        + (f"; {final.model}, {final.completion_tokens} tokens ({final.finish_reason})" if final.model else ""),
    ]
    if final.is_degraded:
        lines.append(f"[yellow]degraded answer ({final.degraded_reason}): extracted from the sources")
    return "\n".join(lines)


def ask_events(
    target: str, question: str, top_k: int, timeout_s: float, where: query_pb2.Filter | None = None
) -> Iterator[query_pb2.AskResponse]:
    """The Ask stream as it arrives. grpc.RpcError when the server refuses."""
    request = query_pb2.AskRequest(question=question, top_k=top_k, filter=where)
    with query_channel(target) as channel:
        yield from query_pb2_grpc.QueryServiceStub(channel).Ask(request, timeout=timeout_s)


def stream_answer(
    target: str,
    question: str,
    top_k: int,
    timeout_s: float,
    console: Console,
    where: query_pb2.Filter | None = None,
) -> query_pb2.AskFinal:
    """Prints the Ask stream as it arrives: the sources, the generated text dimmed while it is provisional (not
    checked against the sources yet), then the answer; returns the final message. grpc.RpcError when the server
    refuses."""
    final, showing = query_pb2.AskFinal(), ""  # "", then "draft" while provisional text comes, then "answer"
    for event in ask_events(target, question, top_k, timeout_s, where):
        kind = event.WhichOneof("event")
        if kind == "sources":
            console.print(sources_table(event.sources))
        elif kind == "delta":
            part = "draft" if event.delta.provisional else "answer"
            if part != showing:
                heading = "[dim]generating:[/dim] " if part == "draft" else "[bold]answer:[/bold] "
                console.print(("\n" if showing else "") + heading, end="")
                showing = part
            style = "dim" if part == "draft" else ""
            console.print(event.delta.text, end="", style=style, markup=False, highlight=False, soft_wrap=True)
        elif kind == "final":
            final = event.final
    console.print()
    console.print(footer(final))
    return final


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def answer_json(question: str, sources: query_pb2.AskSources, final: query_pb2.AskFinal) -> dict[str, Any]:
    """One Ask as a JSON object: the question, every field of the final message (answer, is_degraded,
    degraded_reason, citations with object ids, timings, model, tokens, from_cache), the sources and how they were
    retrieved (partial, missing shards, space, result cache, keyword fallback)."""
    retrieval = query_pb2.AskSources()
    retrieval.CopyFrom(sources)
    del retrieval.sources[:]
    return {
        "question": question,
        **_as_dict(final),
        "sources": [_as_dict(s) for s in sources.sources],
        "retrieval": _as_dict(retrieval),
    }


def collect_answer(
    target: str, question: str, top_k: int, timeout_s: float, where: query_pb2.Filter | None = None
) -> dict[str, Any]:
    """Reads the whole Ask stream; returns ``answer_json`` of it."""
    sources, final = query_pb2.AskSources(), query_pb2.AskFinal()
    for event in ask_events(target, question, top_k, timeout_s, where):
        kind = event.WhichOneof("event")
        if kind == "sources":
            sources = event.sources
        elif kind == "final":
            final = event.final
    return answer_json(question, sources, final)


@friendly
def _run(args: argparse.Namespace) -> int:
    if not args.question.strip():
        raise CommandError('ask a question: mmrag ask "how do consumer groups share partitions?"')
    target = args.target or OperatorSettings().target
    if args.json:
        answer = collect_answer(target, args.question, args.top_k, args.timeout, filter_of(args))
        print_json(answer)
        return 0 if answer["answer"] else 1
    final = stream_answer(target, args.question, args.top_k, args.timeout, console(), filter_of(args))
    return 0 if final.answer else 1


def register_cli(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("ask", help="ask a question: the answer streams with its sources and citations")
    parser.add_argument("question")
    parser.add_argument("--top-k", type=int, default=10, help="hits retrieved (grouped into sources per object)")
    parser.add_argument(
        "--target", help="the query service's gRPC address (default MMRAG_QUERY_TARGET or 127.0.0.1:MMRAG_GRPC_PORT)"
    )
    add_token_flag(parser)
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds (it reaches the LLM worker)")
    add_filter_flags(parser)
    add_json_flag(parser)
    parser.set_defaults(func=_run)
