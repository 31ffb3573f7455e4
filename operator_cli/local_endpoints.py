"""Every `mmrag` command finds a running local stack by itself: the MMRAG_* variables a user did not set are taken
from the stack recorded under $MMRAG_STATE_DIR (default `~/.cache/kafka-mmrag/stack`). Set variables always win,
so the same commands work against a real deployment."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


class NoEndpointError(Exception):
    """A setting a command needs is neither set nor offered by a running local stack; the message says what to do."""


def stack_state_dir() -> Path | None:
    """The state dir a local stack would use here; None where the local tooling is not installed (an image)."""
    if importlib.util.find_spec("local_stack") is None:
        return None
    from local_stack.state import default_state_dir

    return default_state_dir()


def running_stack_env() -> dict[str, str]:
    """The client variables of the stack under the default state dir while its Kafka runs; empty otherwise."""
    state_dir = stack_state_dir()
    if state_dir is None:
        return {}
    from local_stack import kafka_broker
    from local_stack.state import StackRecord

    record = StackRecord.load(state_dir)
    cluster = kafka_broker.load_cluster(state_dir / "kafka")
    if record is None or cluster is None or not cluster.is_running():
        return {}
    return record.client_env()


def apply_stack_env() -> dict[str, str]:
    """Fills the unset MMRAG_* variables from a running local stack; returns what it filled."""
    filled = {key: value for key, value in running_stack_env().items() if key not in os.environ}
    os.environ.update(filled)
    return filled


def require(*names: str) -> None:
    """NoEndpointError naming each of ``names`` that is unset (after `apply_stack_env`) and how to get it."""
    missing = [name for name in names if name not in os.environ]
    if missing:
        where = stack_state_dir()
        looked = f"no local stack runs under {where}" if where else "the local stack tooling is not installed"
        raise NoEndpointError(
            f"{', '.join(missing)} not set and {looked} -> start one with `mmrag stack up` (or set "
            f"MMRAG_STATE_DIR to a running stack's dir), or set {' and '.join(missing)} for your deployment"
        )


def note_default_endpoints() -> None:
    """Says on stderr when a command will talk to the built-in defaults because nothing named a deployment: with no
    stack under this state dir, 127.0.0.1:50051 may be another stack's query service (or nothing)."""
    if any(name in os.environ for name in ("MMRAG_BOOTSTRAP_SERVERS", "MMRAG_QUERY_TARGET", "MMRAG_GRPC_PORT")):
        return
    where = stack_state_dir()
    looked = f"no local stack runs under {where}" if where else "the local stack tooling is not installed"
    print(
        f"mmrag: note: {looked} and no MMRAG_BOOTSTRAP_SERVERS / MMRAG_QUERY_TARGET is set -> using the defaults "
        "(Kafka 127.0.0.1:9092, query service 127.0.0.1:50051), which may be another stack; set MMRAG_STATE_DIR to "
        "the stack's dir (`mmrag stack env`) or MMRAG_* for your deployment",
        file=sys.stderr,
    )
