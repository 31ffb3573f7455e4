"""Trace export settings (standard OTEL_* variables), span links for batches, exemplars, and a real OTLP export:
a process with OTEL_EXPORTER_OTLP_ENDPOINT set sends its spans, as OTLP protobuf over HTTP, to a receiver here."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from mmrag.tracing import TracingSettings, message_links, otlp_exporter, trace_exemplar

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[1]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_export_is_off_unless_an_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(key, raising=False)
    assert not TracingSettings().exporting
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert TracingSettings().exporting and TracingSettings().protocol == "http/protobuf"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not TracingSettings().exporting
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not TracingSettings().exporting


def test_the_protocol_picks_the_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert type(otlp_exporter(TracingSettings())).__module__.endswith("proto.grpc.trace_exporter")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert type(otlp_exporter(TracingSettings())).__module__.endswith("proto.http.trace_exporter")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"):
        otlp_exporter(TracingSettings())


def test_a_batch_links_every_message_that_carries_a_context() -> None:
    other = f"00-{'1' * 32}-{'2' * 16}-01"
    links = message_links([{"traceparent": PARENT}, {}, {"traceparent": other}, {"traceparent": "garbage"}])
    assert [format(link.context.trace_id, "032x") for link in links] == [TRACE_ID, "1" * 32]
    assert format(links[0].context.span_id, "016x") == "00f067aa0ba902b7"


def test_exemplars_name_sampled_traces_only() -> None:
    assert trace_exemplar({"traceparent": PARENT}) == {"trace_id": TRACE_ID}
    assert trace_exemplar({"traceparent": PARENT[:-2] + "00"}) is None  # not sampled
    assert trace_exemplar({}) is None


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


SPAN_PROGRAM = """
from mmrag.tracing import setup_tracing, flush_spans
tracer = setup_tracing("normalizer", instance_id="normalizer-7")
with tracer.start_as_current_span("normalizer", attributes={"mmrag.version": "v3"}):
    pass
assert flush_spans()
"""


def test_spans_reach_an_otlp_receiver_when_an_endpoint_is_set() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "PATH": ""}
    try:
        done = subprocess.run(
            [sys.executable, "-c", SPAN_PROGRAM], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
        )
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    (path, body), *_ = _Receiver.bodies
    assert path == "/v1/traces"
    request = ExportTraceServiceRequest.FromString(body)
    resource = request.resource_spans[0]
    names = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert names["service.name"] == "normalizer" and names["service.instance.id"] == "normalizer-7"
    span = resource.scope_spans[0].spans[0]
    assert span.name == "normalizer"
    assert {a.key: a.value.string_value for a in span.attributes} == {"mmrag.version": "v3"}
