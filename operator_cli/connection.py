"""Where the operator commands find the deployment (MMRAG_* settings), and how they report what went wrong.

Every operator command runs through ``friendly``: a failure prints one line naming what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console

from mmrag.grpc_tls import TOKEN_ENV
from mmrag.kafka_clients import admin_config
from mmrag.topics import SPECS, Topics

EXIT_FAILED = 2


class OperatorSettings(BaseSettings):
    """The deployment the operator commands look at; the same MMRAG_* variables the services read."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", frozen=True, extra="ignore")

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers")
    topic_prefix: str = Field(default="", description="the deployment's topic prefix")
    grpc_port: int = Field(default=50051, description="the query service's gRPC port on this host")
    query_target: str = Field(default="", description="host:port of the query service (default 127.0.0.1:GRPC_PORT)")

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def target(self) -> str:
        return self.query_target or f"127.0.0.1:{self.grpc_port}"

    def project_topics(self) -> set[str]:
        """Every topic of this deployment (prefix-aware)."""
        return {self.topics.name(spec.base) for spec in SPECS}

    def admin(self) -> AdminClient:
        """An admin client of a cluster that answered (KafkaException otherwise, which ``friendly`` explains)."""
        # librdkafka's own connection-failure lines would bury the one line that says what to do
        admin = AdminClient(admin_config(self.bootstrap_servers, **{"socket.timeout.ms": 10000, "log_level": 2}))
        admin.list_topics(timeout=10)
        return admin


class CommandError(Exception):
    """A failure the operator can act on; the message says what happened and what to do."""


def kafka_problem(exc: BaseException, settings: OperatorSettings) -> CommandError:
    """A Kafka error as an operator message: unreachable brokers name the setting to check."""
    text = str(exc.args[0]) if isinstance(exc, KafkaException) and exc.args else str(exc)
    if any(word in text for word in ("_TRANSPORT", "_TIMED_OUT", "timed out", "Timed out", "ALL_BROKERS_DOWN")):
        return CommandError(
            f"Kafka at {settings.bootstrap_servers} did not answer ({text}) -> start the stack (`mmrag stack up`) "
            "or point MMRAG_BOOTSTRAP_SERVERS at the cluster"
        )
    return CommandError(f"Kafka refused: {text} -> check MMRAG_BOOTSTRAP_SERVERS and the broker's log")


def grpc_problem(exc: grpc.RpcError, target: str) -> CommandError:
    """A gRPC error as an operator message."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE and "status view" not in str(details):
        return CommandError(
            f"query service at {target} not reachable ({details}) -> start it (`mmrag stack up`) or set "
            "MMRAG_QUERY_TARGET (or --target)"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return CommandError(
            f"query service at {target} refused the call: UNAUTHENTICATED: {details} (token: --token, "
            "MMRAG_TOKEN or MMRAG_TOKEN_FILE)"
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return CommandError(f"query service at {target} refused the call: PERMISSION_DENIED: {details}")
    return CommandError(f"query service at {target}: {code.name if code else 'error'}: {details}")


def friendly(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Runs a command; CommandError, Kafka and gRPC failures become one line on stderr and exit status 2."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        settings = OperatorSettings()
        if getattr(args, "token", None):  # every query channel of this process sends it (mmrag.grpc_tls)
            os.environ[TOKEN_ENV] = args.token
        try:
            return run(args)
        except CommandError as exc:
            message = str(exc)
        except KafkaException as exc:
            message = str(kafka_problem(exc, settings))
        except grpc.RpcError as exc:
            message = str(grpc_problem(exc, getattr(args, "target", None) or settings.target))
        except TimeoutError:
            message = f"Kafka at {settings.bootstrap_servers} did not answer in time -> check the cluster, then retry"
        except KeyboardInterrupt:
            message = "interrupted"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_FAILED

    return wrapped


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds, an ISO 8601 time (UTC unless it names a zone), or an age like 90s, 30m, 2h, 1d (ago)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text.isdigit():
            return int(text)
        if text[:-1].isdigit() and text[-1:] in units:
            return int((time.time() - int(text[:-1]) * units[text[-1]]) * 1000)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CommandError(
            f"{text!r} is not a time -> give epoch ms, an ISO time (2026-12-01T08:00:00Z) or an age (30m, 2h, 1d)"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def format_ms(ms: int) -> str:
    """Epoch milliseconds as a readable UTC time ('-' for none)."""
    if ms <= 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def console() -> Console:
    """A rich console; piped output gets wide lines instead of 80 columns (unless COLUMNS says), so names are not
    cut."""
    return Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def add_token_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token", help="bearer token (a JWT or an API key) sent to the query service (default MMRAG_TOKEN / _FILE)"
    )


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
