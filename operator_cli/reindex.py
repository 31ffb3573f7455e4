"""`mmrag reindex`: build a new embedding space by replaying objects.v1, swap the live alias to it, roll back, or
rebuild a lost collection from vectors.v1.

A re-index space is named (``--space NAME`` = MMRAG_SPACE_NAME of its processes): its text embedder, vision embedder
and index updater run in groups ``<group>.<NAME>`` that start at the earliest offset of the compacted objects.v1,
write ``embeddings.<NAME>.v1`` and the collection ``<prefix>_<space id>_<NAME>``, while the live space keeps
serving and ingesting (a new upload reaches both: every group reads objects.v1). Consumer offsets are the
checkpoint: starting the same space again resumes it. ``--swap`` moves the live alias once every group of the
space has caught up (lag 0); ``--rollback`` moves it back to where the last swap took it from; ``--keep N`` drops
the old spaces beyond the N most recent (operator_cli/spaces.py). The progress view exports its figures as
Prometheus gauges (``--metrics-port``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka.admin import OffsetSpec
from prometheus_client import Gauge, start_http_server
from pymilvus import MilvusClient
from rich.live import Live
from rich.table import Table

from local_stack.processes import alive_pid, stop_all_detached
from local_stack.secure_kafka import space_identities
from local_stack.services import Service
from mmrag.milvus_index import milvus_client, move_alias
from mmrag.settings import BaseServiceSettings, SpaceSettings, VectorStoreSettings, group_name
from mmrag.topics import Topics, ensure_topics
from operator_cli.connection import CommandError, OperatorSettings, console, friendly
from operator_cli.group_offsets import end_offsets
from operator_cli.lag import group_lags
from operator_cli.spaces import drop, load_swaps, spaces, spaces_table, swaps_path, to_drop

# (stage, base consumer group, the topic it reads, module)
STAGES = (
    ("text_embedder", "embedder-text", "objects", "consumers.text_embedder"),
    ("vision_embedder", "embedder-vision", "objects", "consumers.vision_embedder"),
    ("index_updater", "index-updater", "embeddings", "index_updater"),
)
PROGRESS = {
    "done": Gauge("mmrag_reindex_done", "Records of the stage's input its group has read", ["space", "stage"]),
    "total": Gauge("mmrag_reindex_total", "Records the stage's input topic holds now", ["space", "stage"]),
    "lag": Gauge("mmrag_reindex_lag", "Records the stage's group still has to read", ["space", "stage"]),
    "rate": Gauge("mmrag_reindex_rate", "Records per second over the last interval", ["space", "stage"]),
}
MODEL_FLAGS = (
    "clip_model_dir",
    "precision",
    "encoder_backend",
    "text_weight",
    "image_weight",
    "clip_text_for_text",
    "index_backend",
)


@dataclass(frozen=True)
class StageProgress:
    stage: str
    group: str
    topic: str
    total: int  # records of the topic as of now (offsets: a compacted topic counts what it still holds)
    lag: int

    @property
    def done(self) -> int:
        return max(0, self.total - self.lag)


class SpaceOperatorSettings(OperatorSettings):
    """The operator's view of one space: its topics carry the space name."""

    space_name: str = ""

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix, self.space_name)


def space_dir(state_dir: Path, name: str) -> Path:
    return state_dir / "reindex" / name


def space_services(
    name: str, overrides: dict[str, str], state_dir: Path, identities: dict[str, dict[str, str]] | None = None
) -> list[Service]:
    """The processes of space ``name``: MMRAG_SPACE_NAME plus the model settings given, on top of this environment;
    ``identities``: each stage's own Kafka identity on a secured cluster (else this environment's)."""
    env = {"MMRAG_SPACE_NAME": name, **overrides}
    return [
        Service(f"{stage}-{name}", module, {**env, **(identities or {}).get(stage, {})}, space_dir(state_dir, name))
        for stage, _, _, module in STAGES
    ]


def progress(name: str, attempts: int = 3) -> list[StageProgress]:
    """Per stage of space ``name``: the records of its input topic and its group's lag (a group that committed
    nothing yet has everything still to do). Asked again after a second when the brokers cannot say yet (a topic
    just created has no leader for a moment); CommandError when they still cannot."""
    for _ in range(attempts - 1):
        try:
            return _progress(name)
        except CommandError:
            time.sleep(1.0)
    return _progress(name)


def _progress(name: str) -> list[StageProgress]:
    settings = SpaceOperatorSettings(space_name=name)
    admin = settings.admin()
    topics = settings.topics
    wanted = {g: topics.name(base) for _, g, base, _ in STAGES}
    metadata = admin.list_topics(timeout=15).topics
    parts = {t: [(t, p) for p in metadata[t].partitions] if t in metadata else [] for t in wanted.values()}
    ends = end_offsets(admin, [tp for tps in parts.values() for tp in tps])
    starts = end_offsets(admin, [tp for tps in parts.values() for tp in tps], OffsetSpec.earliest())
    lags = {g.group: g.total for g in group_lags(settings)}
    found = []
    for stage, base, _, _ in STAGES:
        group, topic = group_name(settings.topic_prefix, base, name), wanted[base]
        total = sum(ends[tp] - starts[tp] for tp in parts[topic])
        found.append(StageProgress(stage, group, topic, total, lags.get(group, total)))
    return found


def caught_up(stages: list[StageProgress]) -> bool:
    """Every stage read everything there is, and the updater got something (an empty space never swaps)."""
    return all(s.lag == 0 for s in stages) and stages[-1].total > 0


def progress_table(name: str, stages: list[StageProgress], rates: dict[str, float]) -> Table:
    table = Table(title=f"re-index of space {name!r}", title_justify="left")
    for column in ("stage", "group", "topic", "done", "total", "lag", "rate/s", "ETA"):
        table.add_column(column, justify="left" if column in ("stage", "group", "topic") else "right")
    for s in stages:
        rate = rates.get(s.stage, 0.0)
        eta = "-" if s.lag == 0 else (f"{s.lag / rate:.0f}s" if rate > 0 else "?")
        table.add_row(s.stage, s.group, s.topic, str(s.done), str(s.total), str(s.lag), f"{rate:.1f}", eta)
    return table


def export_progress(name: str, stages: list[StageProgress], rates: dict[str, float]) -> None:
    """Sets the ``mmrag_reindex_*`` gauges of space ``name`` (served by ``--metrics-port``)."""
    for s in stages:
        figures = {"done": s.done, "total": s.total, "lag": s.lag, "rate": rates.get(s.stage, 0.0)}
        for metric, value in figures.items():
            PROGRESS[metric].labels(name, s.stage).set(value)


def _rates(before: list[StageProgress], after: list[StageProgress], seconds: float) -> dict[str, float]:
    return {a.stage: max(0, a.done - b.done) / seconds for b, a in zip(before, after, strict=True) if seconds > 0}


def follow(name: str, interval_s: float, swap: bool, timeout_s: float) -> bool:
    """Shows the space's progress until it caught up (then swaps when asked); False after ``timeout_s``."""
    before, at = progress(name), time.monotonic()
    export_progress(name, before, {})
    deadline = at + timeout_s
    with Live(progress_table(name, before, {}), console=console(), transient=False) as live:
        while not caught_up(before):
            if time.monotonic() > deadline:
                return False
            time.sleep(interval_s)
            now, after = time.monotonic(), progress(name)
            rates = _rates(before, after, now - at)
            export_progress(name, after, rates)
            live.update(progress_table(name, after, rates))
            before, at = after, now
    if swap:
        swap_to(name)
    return True


def _client() -> tuple[MilvusClient, VectorStoreSettings]:
    store = VectorStoreSettings()
    token = store.milvus_token.get_secret_value()
    return milvus_client(store.milvus_uri, token), store


def space_collection(client: MilvusClient, store: VectorStoreSettings, name: str) -> str:
    """The collection of re-index space ``name`` (``<prefix>_<space id>_<name>``); CommandError when none."""
    head, tail = f"{store.collection_prefix}_", f"_{name}"
    found = [c for c in client.list_collections() if c.startswith(head) and c.endswith(tail)]
    found = [c for c in found if len(c) == len(head) + 10 + len(tail)]  # a space id is 10 hex digits
    if len(found) != 1:
        raise CommandError(
            f"space {name!r}: {'no collection' if not found else f'collections {found}'} under prefix "
            f"{store.collection_prefix!r} -> start it with `mmrag reindex --space {name}` (or check the prefix)"
        )
    return found[0]


def swap_to(name: str, force: bool = False) -> str:
    """Moves the live alias to space ``name``'s collection once it caught up; records where it pointed before."""
    if not force and not caught_up(progress(name)):
        raise CommandError(f"space {name!r} has not caught up (`mmrag reindex --space {name} --status`) -> wait")
    client, store = _client()
    collection = space_collection(client, store, name)
    before = move_alias(client, store.live_alias, collection)
    path = swaps_path()
    swaps = json.loads(path.read_text()) if path.exists() else []
    swaps.append({"alias": store.live_alias, "from": before, "to": collection, "at_ms": int(time.time() * 1000)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(swaps, indent=2))
    return collection


def rollback() -> str:
    """Moves the live alias back to where the last swap took it from."""
    path = swaps_path()
    swaps = json.loads(path.read_text()) if path.exists() else []
    if not swaps or swaps[-1]["from"] is None:
        raise CommandError(f"no swap to roll back in {path} -> `mmrag reindex --swap` records them")
    last = swaps.pop()
    client, _ = _client()
    move_alias(client, last["alias"], last["from"])
    path.write_text(json.dumps(swaps, indent=2))
    return str(last["from"])


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    return {f"MMRAG_{f.upper()}": str(getattr(args, f)) for f in MODEL_FLAGS if getattr(args, f) is not None}


LAST_STARTED = "reindex-last-space"  # under the state directory: the space `--status` alone reports


def last_started() -> str:
    """The space `mmrag reindex --space` last started here (what `--status` alone reports)."""
    path = BaseServiceSettings().state_dir / LAST_STARTED
    if not path.exists():
        raise CommandError("no re-index was started here -> `mmrag reindex --space NAME --status` names one")
    return path.read_text().strip()


def start_space(name: str, overrides: dict[str, str]) -> list[Service]:
    """Creates the space's topics and starts its processes (detached; they outlive this command)."""
    state_dir = BaseServiceSettings().state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / LAST_STARTED).write_text(name)
    settings = BaseServiceSettings(space_name=name)
    ensure_topics(settings.bootstrap_servers, settings.topics, vector_shards=VectorStoreSettings().shards)
    stages = [stage for stage, _, _, _ in STAGES]
    identities = space_identities(os.environ, settings.topic_prefix, name, stages)  # secured: least privilege
    services = space_services(name, overrides, state_dir, identities)
    for service in services:
        if alive_pid(service.pidfile) is None:
            service.start()
    return services


def stop_space(name: str) -> None:
    state_dir = BaseServiceSettings().state_dir
    stop_all_detached([s.pidfile for s in space_services(name, {}, state_dir)], timeout_s=20)


@friendly
def _run(args: argparse.Namespace) -> int:
    if args.rollback:
        print(f"live alias -> {rollback()}")
        return 0
    if args.keep is not None:
        return keep_spaces(args.keep, args.yes)
    if args.rebuild_from == "vectors":
        return _rebuild(args.space or "", _models(args))
    if args.status and not args.space:
        args.space = last_started()
    if not args.space:
        raise CommandError("name the space: `mmrag reindex --space NAME` (its groups and collection carry it)")
    if args.stop:
        stop_space(args.space)
        return 0
    if args.swap:
        print(f"live alias -> {swap_to(args.space, args.force)}")
        return 0
    if args.status:
        stages = progress(args.space)
        if args.json:
            print(json.dumps({"space": args.space, "stages": [asdict(s) for s in stages]}))
        else:
            console().print(progress_table(args.space, stages, {}))
        return 0
    start_space(args.space, _overrides(args))
    if args.detach:
        return 0
    if args.metrics_port:
        start_http_server(args.metrics_port)
    return 0 if follow(args.space, args.interval, args.auto_swap, args.timeout) else 1


def _models(args: argparse.Namespace) -> SpaceSettings:
    """The environment's model settings with the flags given on top (what the space's embedders would run with)."""
    given = {f: getattr(args, f) for f in MODEL_FLAGS if f != "index_backend" and getattr(args, f) is not None}
    return SpaceSettings(**given)


def _rebuild(name: str, models: SpaceSettings) -> int:
    from index_updater.rebuild import rebuild_from_vectors

    settings = BaseServiceSettings(space_name=name)
    rebuilt = rebuild_from_vectors(settings.bootstrap_servers, settings.topics, VectorStoreSettings(), name, models)
    kept = "with its space spec" if rebuilt.spec_kept else "WITHOUT a space spec (see the warning)"
    print(
        f"rebuilt {rebuilt.collection} (space {rebuilt.space_id}) from {settings.topics.vectors}: {rebuilt.rows} rows, "
        f"{kept}"
    )
    return 0


def keep_spaces(keep: int, yes: bool, ask: Callable[[str], str] = input) -> int:
    """Drops the old spaces beyond the ``keep`` most recent (never the live one or the rollback target) after a
    confirmation (``yes`` skips it); stops their re-index processes first."""
    client, store = _client()
    rows = spaces(client, store, load_swaps(swaps_path()))
    console().print(spaces_table(rows, store.live_alias))
    doomed = to_drop(rows, keep)
    if not doomed:
        print(f"nothing to drop: at most {keep} old spaces besides the live one and the rollback target")
        return 0
    print("to drop: " + ", ".join(f"{s.label} ({s.collection})" for s in doomed))
    if not yes and ask("drop these spaces (collection, groups, topics)? [y/N] ").strip().lower() not in ("y", "yes"):
        print("nothing dropped")
        return 1
    settings = OperatorSettings()
    for space in doomed:
        if space.space_name:
            stop_space(space.space_name)
        for what in drop(client, settings.admin(), store, settings.topic_prefix, space):
            print(f"dropped {what}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "reindex", help="re-index into a new space by replaying objects.v1; swap, rollback, rebuild"
    )
    parser.add_argument("--space", help="the new space's name (letters, digits, _): its groups, topics, collection")
    for flag in MODEL_FLAGS:
        parser.add_argument(f"--{flag.replace('_', '-')}", default=None, help=f"MMRAG_{flag.upper()} of the space")
    parser.add_argument(
        "--status", action="store_true", help="progress of the space's stages (no --space: the last started), then exit"
    )
    parser.add_argument("--swap", action="store_true", help="move the live alias to the space (it must be caught up)")
    parser.add_argument("--force", action="store_true", help="with --swap: swap even when not caught up")
    parser.add_argument("--auto-swap", action="store_true", help="swap as soon as the space caught up")
    parser.add_argument("--rollback", action="store_true", help="move the live alias back to before the last swap")
    parser.add_argument("--stop", action="store_true", help="stop the space's processes")
    parser.add_argument("--detach", action="store_true", help="start the processes and exit (no progress view)")
    parser.add_argument("--rebuild-from", choices=["vectors"], help="rebuild the space's collection from vectors.v1")
    parser.add_argument("--keep", type=int, help="drop the old spaces beyond the N most recent (asks first)")
    parser.add_argument("--yes", action="store_true", help="with --keep: drop without asking")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve the progress as Prometheus gauges here")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between progress updates")
    parser.add_argument("--timeout", type=float, default=86400.0, help="give up following after this many seconds")
    parser.add_argument("--json", action="store_true", help="with --status: also as JSON")
    parser.set_defaults(func=_run)
