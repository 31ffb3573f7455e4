"""A query service whose gRPC port is taken stops with an error naming the port and the fix, instead of sharing the
port silently (gRPC's default SO_REUSEPORT let two query services listen on 50051 and split the calls)."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest

from local_stack.processes import free_port
from mmrag.telemetry import Probes
from query_service.server import QueryServicer, serve
from query_service.settings import QueryServiceSettings
from tests.kafka_tools import wait_for

pytestmark = pytest.mark.unit


def test_a_taken_grpc_port_is_refused_with_the_fix() -> None:
    port = free_port()
    first = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # default options: SO_REUSEPORT on
    assert first.add_insecure_port(f"127.0.0.1:{port}") == port
    first.start()
    try:
        settings = QueryServiceSettings(grpc_port=port)
        servicer = QueryServicer.__new__(QueryServicer)  # registration only looks up its methods
        stop = threading.Event()
        stop.set()
        with pytest.raises(RuntimeError, match=rf"gRPC port 127.0.0.1:{port} is taken.*MMRAG_GRPC_PORT"):
            serve(settings, servicer, Probes("query-service"), stop)
    finally:
        first.stop(0)


def test_a_free_port_serves() -> None:
    port = free_port()
    probes = Probes("query-service")
    stop = threading.Event()
    stop.set()  # serve returns right after starting
    serve(QueryServiceSettings(grpc_port=port), QueryServicer.__new__(QueryServicer), probes, stop)
    assert not probes.ready  # stopped again: readiness went back to false


def test_a_port_a_grpc_server_listens_on_is_not_free() -> None:
    """gRPC listens on an IPv6 socket with v4-mapped addresses ([::ffff:127.0.0.1]); an IPv4-only bind test passes
    beside it, and a second stack then picked the port and crash-looped on "port taken"."""
    from local_stack.processes import port_free

    port = free_port()
    assert port_free(port)
    listener = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=[("grpc.so_reuseport", 0)])
    assert listener.add_insecure_port(f"127.0.0.1:{port}") == port
    listener.start()
    try:
        assert not port_free(port)
    finally:
        listener.stop(0).wait(5)  # the shutdown completes asynchronously: the socket closes after stop returns
    wait_for(lambda: port_free(port), 5, f"port {port} free again after the server stopped")
