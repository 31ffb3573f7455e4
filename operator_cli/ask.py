"""`mmrag ask "question"`: asks the query service, prints the sources, streams the answer as it is generated,
then the citations it used, the timings and whether it is degraded."""

from __future__ import annotations

import argparse

import grpc
from rich.console import Console
from rich.table import Table

from mmrag.pb import query_pb2, query_pb2_grpc
from operator_cli.connection import CommandError, OperatorSettings, console, friendly
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


def stream_answer(
    target: str,
    question: str,
    top_k: int,
    timeout_s: float,
    console: Console,
    where: query_pb2.Filter | None = None,
) -> query_pb2.AskFinal:
    """Prints the Ask stream as it arrives; returns the final message. grpc.RpcError when the server refuses."""
    final = query_pb2.AskFinal()
    request = query_pb2.AskRequest(question=question, top_k=top_k, filter=where)
    with grpc.insecure_channel(target) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        for event in stub.Ask(request, timeout=timeout_s):
            kind = event.WhichOneof("event")
            if kind == "sources":
                console.print(sources_table(event.sources))
                console.print("[bold]answer:[/bold] ", end="")
            elif kind == "delta":
                console.print(event.delta.text, end="", markup=False, highlight=False, soft_wrap=True)
            elif kind == "final":
                final = event.final
    console.print()
    console.print(footer(final))
    return final


@friendly
def _run(args: argparse.Namespace) -> int:
    if not args.question.strip():
        raise CommandError('ask a question: mmrag ask "how do consumer groups share partitions?"')
    target = args.target or OperatorSettings().target
    final = stream_answer(target, args.question, args.top_k, args.timeout, console(), filter_of(args))
    return 0 if final.answer else 1


def register_cli(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("ask", help="ask a question: the answer streams with its sources and citations")
    parser.add_argument("question")
    parser.add_argument("--top-k", type=int, default=10, help="hits retrieved (grouped into sources per object)")
    parser.add_argument(
        "--target", help="the query service's gRPC address (default MMRAG_QUERY_TARGET or 127.0.0.1:MMRAG_GRPC_PORT)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds (it reaches the LLM worker)")
    add_filter_flags(parser)
    parser.set_defaults(func=_run)
