"""`mmrag top`: a live terminal view of the running stack or a deployment, refreshed every second; `--once --json`
prints one snapshot for scripts. Reads each service's /metrics and /readyz directly (no Prometheus needed)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from operator_cli.top_metrics import Scrape, Target, query_summary, scrape, service_row

EXIT_NOTHING_TO_WATCH = 3


def register_cli(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("top", help="live view: readiness, rate, lag, freshness, errors per service; query latency")
    top.add_argument(
        "--targets",
        default="",
        help="NAME=http://host:port,... probe URLs of a deployment's services (default: the local stack's)",
    )
    top.add_argument("--state-dir", type=Path, default=None, help="the local stack's (default: $MMRAG_STATE_DIR)")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (and rate windows)")
    top.add_argument("--once", action="store_true", help="one snapshot (two scrapes --interval apart), then exit")
    top.add_argument("--json", action="store_true", help="with --once: print JSON instead of tables")
    top.set_defaults(func=_top)


def parse_targets(spec: str) -> list[Target]:
    """``NAME=URL,...`` -> targets; ValueError naming the bad entry."""
    targets = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, url = entry.partition("=")
        if not sep or not url.startswith("http"):
            raise ValueError(f"--targets entry {entry!r}: want NAME=http://host:port (the service's probe port)")
        targets.append(Target(name, url.rstrip("/")))
    return targets


def stack_targets(state_dir: Path) -> list[Target]:
    """Every service of the local stack under ``state_dir``, with its supervisor's restart count."""
    from local_stack.state import StackRecord
    from local_stack.supervisor import read_status

    record = StackRecord.load(state_dir)
    if record is None:
        return []
    restarts = read_status(state_dir)
    return [
        Target(s.name, f"http://127.0.0.1:{s.probe_port}", int(str(restarts.get(s.name, {}).get("restarts", 0))))
        for s in record.services
    ]


def _targets_source(args: argparse.Namespace) -> Callable[[], list[Target]]:
    if args.targets:
        fixed = parse_targets(args.targets)
        return lambda: fixed
    from local_stack.state import default_state_dir

    state_dir = args.state_dir or default_state_dir()
    return lambda: stack_targets(state_dir)


def scrape_all(targets: list[Target]) -> list[Scrape]:
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        return list(pool.map(lambda t: scrape(t, time.monotonic()), targets))


def snapshot(before: list[Scrape], now: list[Scrape]) -> dict[str, object]:
    """The view as data: a row per service (matched by name) and the query summary."""
    earlier = {s.target.name: s for s in before}
    rows = [service_row(earlier.get(s.target.name, Scrape(s.target, s.at)), s) for s in now]
    return {"services": rows, "query": query_summary(before, now)}


def render(view: dict[str, object]) -> Group:
    table = Table(title="services", title_justify="left")
    for column in ("service", "ready", "msg/s", "lag", "fresh p99 s", "failed", "DLQ", "restarts"):
        table.add_column(column, justify="left" if column == "service" else "right")
    for row in view["services"]:  # type: ignore[attr-defined]
        ready = Text("ready", "green") if row["ready"] else Text(str(row["detail"] or "not ready")[:40], "red")
        table.add_row(
            str(row["service"]),
            ready,
            _fmt(row["messages_per_s"]),
            _fmt(row["lag"]),
            _fmt(row["freshness_p99_s"]) + ("*" if row["freshness_lifetime"] else ""),
            _fmt(row["failed_total"]),
            _fmt(row["dlq_total"]),
            _fmt(row["restarts"]),
        )
    q = view["query"]
    line = (
        f"Search p50/p99 {_fmt(q['search_p50_ms'])}/{_fmt(q['search_p99_ms'])} ms   "  # type: ignore[index]
        f"Ask p50 {_fmt(q['ask_p50_ms'])} ms, first token p50 {_fmt(q['ask_first_token_p50_ms'])} ms   "  # type: ignore[index]
        f"degraded {_fmt(q['ask_degraded_share'])} of {q['asks_total']} Asks   LLM breaker {_fmt(q['llm_breaker'])}"  # type: ignore[index]
    )
    return Group(table, Text(line), Text("* since start (nothing new in the last interval)", "dim"))


def _fmt(value: object) -> str:
    return "-" if value is None else str(value)


def _top(args: argparse.Namespace) -> int:
    try:
        source = _targets_source(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    before = scrape_all(source())
    if not before:
        print("nothing to watch: no local stack (`mmrag stack up`) and no --targets", file=sys.stderr)
        return EXIT_NOTHING_TO_WATCH
    if args.once:
        time.sleep(args.interval)
        view = snapshot(before, scrape_all(source()))
        if args.json:
            print(json.dumps(view, indent=2))
        else:
            Console(width=None if sys.stdout.isatty() else 140).print(render(view))
        return 0
    with Live(render(snapshot(before, before)), refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(args.interval)
                now = scrape_all(source())
                live.update(render(snapshot(before, now)))
                before = now
        except KeyboardInterrupt:
            return 0
