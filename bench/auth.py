"""The call guard's cost per call (query_service/call_guard.py): the same unary gRPC call to an in-process server
with no interceptor, and with the guard in each auth mode (off, api-key, jwt), in one run.

    uv run --frozen --no-sync python -m bench.auth [--calls 2000] [--rounds 3]

The servicer answers at once with two results, so the figures are the guard's own cost (authenticating, the role
check, the caller's context, the call's span, the audit record's JSON and its produce onto a librdkafka producer's
local queue; no broker is reached, so nothing is delivered) on top of gRPC's; a real Search costs tens of ms more.
Modes alternate over ``--rounds`` so the shared machine's drift falls on all. Prints p50/p99 µs per call, the
ratio to no guard, and the verification alone (µs per token) for a JWT (RS256) and an API key.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from confluent_kafka import Producer

from mmrag.grpc_tls import query_channel
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.tracing import setup_tracing
from query_service.audit import AuditLog
from query_service.auth import Authenticator
from query_service.auth_settings import AuthSettings
from query_service.call_guard import CallGuard
from query_service.server import SERVICE_NAME
from tests.auth_tools import make_issuer, write_api_keys

MODES = ("none", "off", "api-key", "jwt")


class Answering(query_pb2_grpc.QueryServiceServicer):
    def Search(self, request: query_pb2.SearchQuery, context: Any) -> query_pb2.SearchResponse:  # noqa: N802
        results = [query_pb2.SearchResult(object_id=f"b/doc-{i}.md", version="v1", score=0.5) for i in range(2)]
        return query_pb2.SearchResponse(results=results)


@contextmanager
def server(guard: CallGuard | None) -> Iterator[str]:
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[guard] if guard else [])
    query_pb2_grpc.add_QueryServiceServicer_to_server(Answering(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        grpc_server.stop(0).wait()


def timed_calls(target: str, token: str, calls: int) -> list[float]:
    """Seconds per call, after 50 warm-up calls."""
    query = query_pb2.SearchQuery(text="consumer groups", top_k=2)
    with query_channel(target, token=token) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        for _ in range(50):
            stub.Search(query, timeout=5)
        took = []
        for _ in range(calls):
            start = time.perf_counter()
            stub.Search(query, timeout=5)
            took.append(time.perf_counter() - start)
    return took


def setups(directory: Path) -> dict[str, tuple[AuthSettings | None, str]]:
    issuer = make_issuer(directory)
    keys = write_api_keys(directory / "keys.json", {"svc": ([], ["search"])})
    return {
        "none": (None, ""),
        "off": (AuthSettings(auth_mode="off"), ""),
        "api-key": (AuthSettings(auth_mode="api-key", auth_api_keys_file=directory / "keys.json"), keys["svc"]),
        "jwt": (
            AuthSettings(
                auth_mode="jwt",
                auth_jwks_url=str(issuer.jwks_file),
                auth_jwt_issuer=issuer.issuer,
                auth_jwt_audience=issuer.audience,
            ),
            issuer.mint_token("alice", ["staff"], ["search"], expires_in_s=3600),
        ),
    }


def verify_us(settings: AuthSettings, token: str, n: int = 2000) -> float:
    auth = Authenticator(settings)
    start = time.perf_counter()
    for _ in range(n):
        auth.caller(f"Bearer {token}")
    return (time.perf_counter() - start) / n * 1e6


def _settings(config: tuple[AuthSettings | None, str]) -> tuple[AuthSettings, str]:
    settings, token = config
    assert settings is not None
    return settings, token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    setup_tracing("bench_auth")
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0, "message.timeout.ms": 3600000})
    took: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        configs = setups(Path(tmp))
        for r in range(args.rounds):
            for mode in MODES if r % 2 == 0 else tuple(reversed(MODES)):
                settings, token = configs[mode]
                guard = None
                if settings is not None:
                    guard = CallGuard(SERVICE_NAME, Authenticator(settings), AuditLog(producer, "audit.v1", False))
                with server(guard) as target:
                    took[mode] += timed_calls(target, token, args.calls)
        jwt_us = verify_us(*_settings(configs["jwt"]))
        key_us = verify_us(*_settings(configs["api-key"]))
    base = statistics.median(took["none"])
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds x {args.calls} calls per mode")
    for mode in MODES:
        ordered = sorted(took[mode])
        p50, p99 = statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]
        print(f"{mode:8s} p50 {p50 * 1e6:7.0f} µs  p99 {p99 * 1e6:7.0f} µs  p50/none {p50 / base:5.2f}")
    print(f"verify alone: JWT RS256 {jwt_us:.0f} µs, API key {key_us:.1f} µs per token")
    print(f"audit records queued: {len(producer)}")


if __name__ == "__main__":
    main()
