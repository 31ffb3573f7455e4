"""Trace export: one SDK tracer provider per process, exporting over OTLP when an endpoint is configured.

The standard OpenTelemetry variables decide (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-
variables/): nothing is exported unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set;
``OTEL_EXPORTER_OTLP_PROTOCOL`` picks ``http/protobuf`` (default) or ``grpc``; ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` turn it off; the SDK itself reads the rest (``OTEL_BSP_*`` for the batch span processor,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``). Spans carry ids, versions,
counts and timings, never document text, questions or secrets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.util.types import AttributeValue
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

_provider_lock = threading.Lock()
PROTOCOLS = ("http/protobuf", "grpc")


class TracingSettings(BaseSettings):
    """The OTEL_* variables this process reads itself to decide whether and how spans are exported."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", frozen=True, extra="ignore")

    sdk_disabled: bool = Field(default=False, description="true: no spans at all are exported")
    service_name: str = Field(default="", description="service.name of every span (default: the stage's name)")
    traces_exporter: str = Field(default="otlp", description="otlp, or none to export nothing")
    exporter_otlp_endpoint: str = Field(default="", description="OTLP collector, e.g. http://127.0.0.1:4318")
    exporter_otlp_traces_endpoint: str = Field(default="", description="OTLP endpoint for traces only (full URL)")
    exporter_otlp_protocol: str = Field(default="http/protobuf", description="http/protobuf or grpc")
    exporter_otlp_traces_protocol: str = Field(default="", description="overrides the protocol for traces")

    @property
    def exporting(self) -> bool:
        endpoint = self.exporter_otlp_traces_endpoint or self.exporter_otlp_endpoint
        return bool(endpoint) and not self.sdk_disabled and self.traces_exporter.strip().lower() != "none"

    @property
    def protocol(self) -> str:
        return (self.exporter_otlp_traces_protocol or self.exporter_otlp_protocol).strip().lower()


def otlp_exporter(settings: TracingSettings) -> SpanExporter:
    """The OTLP span exporter for ``settings.protocol``; it reads endpoint, headers and timeouts from OTEL_*.
    ValueError naming the variable for an unknown protocol."""
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if settings.protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ValueError(
        f"[tracing] OTEL_EXPORTER_OTLP_PROTOCOL={settings.protocol!r} is not supported -> set one of {PROTOCOLS}"
    )


def setup_tracing(service_name: str, settings: TracingSettings | None = None, instance_id: str = "") -> trace.Tracer:
    """Installs the process's SDK tracer provider once (a batch span processor with the OTLP exporter when an
    endpoint is set, else spans are made for context propagation only); returns a tracer named ``service_name``.
    The first call names the process's service (``service.name``, ``service.instance.id``)."""
    settings = settings or TracingSettings()
    with _provider_lock:
        if not isinstance(trace.get_tracer_provider(), TracerProvider):
            names = {"service.name": settings.service_name or service_name, "service.instance.id": instance_id}
            resource = Resource.create({k: v for k, v in names.items() if v})
            provider = TracerProvider(resource=resource)
            if settings.exporting:
                provider.add_span_processor(BatchSpanProcessor(otlp_exporter(settings)))
                log.info("%s: exporting spans over OTLP (%s)", service_name, settings.protocol)
            trace.set_tracer_provider(provider)
    return trace.get_tracer(service_name)


def flush_spans(timeout_ms: int = 5000) -> bool:
    """Exports the spans still queued (before a process ends on a path that skips the SDK's atexit shutdown)."""
    provider = trace.get_tracer_provider()
    return bool(provider.force_flush(timeout_ms)) if isinstance(provider, TracerProvider) else True


def extract_context(headers: Mapping[str, str]) -> Context:
    """The trace context carried by a message's ``traceparent`` header (an empty context when absent)."""
    return propagate.extract(dict(headers))


def inject_context(headers: dict[str, str], context: Context | None = None) -> dict[str, str]:
    """Writes ``traceparent`` (and ``tracestate``) of the current or given context into headers."""
    propagate.inject(headers, context=context)
    return headers


def message_links(headers: Iterable[Mapping[str, str]]) -> list[trace.Link]:
    """One span link per message that carries a trace context (OTel's batch-consumer rule: a span working on many
    messages links each message's context instead of choosing one parent)."""
    links = []
    for carried in headers:
        context = trace.get_current_span(extract_context(carried)).get_span_context()
        if context.is_valid:
            links.append(trace.Link(context))
    return links


def span_attributes(**values: AttributeValue | None) -> dict[str, AttributeValue]:
    """``values`` without the empty ones (None, ''), as span attributes under ``mmrag.``."""
    return {f"mmrag.{name}": value for name, value in values.items() if value is not None and value != ""}


def trace_exemplar(headers: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """A Prometheus exemplar naming the trace of ``headers`` (a message's ``traceparent``), else of the current
    span; None without a sampled trace. Exemplars are served in the OpenMetrics format only."""
    span = trace.get_current_span(extract_context(headers) if headers is not None else None)
    context = span.get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {"trace_id": format(context.trace_id, "032x")}
