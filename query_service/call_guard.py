"""The gRPC server interceptor in front of every QueryService method: authenticates the caller (query_service/auth.py),
gates the method by role, serves the handler as that caller (query_service/callers.py) and writes the call's audit
record (query_service/audit.py). Health and reflection pass untouched.

The work happens inside the handler's behavior, on the server's worker thread: the interceptor hook itself runs on
gRPC's polling thread, where a JWKS fetch would hold up every other call."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import grpc
from opentelemetry import trace

from mmrag.tracing import extract_context, span_attributes
from query_service.audit import AuditLog, Decision, Served, audit_record
from query_service.auth import Authenticator, AuthError, KeysUnavailableError, missing_role
from query_service.callers import Caller, calling_as

log = logging.getLogger(__name__)
TRACER = trace.get_tracer("query_service")
Behavior = Callable[[Any, grpc.ServicerContext], Any]


def _trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


class CallGuard(grpc.ServerInterceptor):
    """Wraps the handlers of ``service`` (its full name); ``audit`` None writes no records (a test server)."""

    def __init__(self, service: str, authenticator: Authenticator, audit: AuditLog | None) -> None:
        self.service = service
        self.authenticator = authenticator
        self.audit = audit

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        service, _, method = str(details.method).lstrip("/").rpartition("/")
        if handler is None or service != self.service:
            return handler
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(method, handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._stream(method, handler.unary_stream))
        raise RuntimeError(f"[query service] {details.method}: only unary and server-streaming methods are guarded")

    def _admit(self, method: str, context: grpc.ServicerContext) -> tuple[Caller | None, Decision]:
        metadata = {k: v for k, v in context.invocation_metadata()}
        try:
            caller = self.authenticator.caller(metadata.get("authorization"))
        except AuthError as exc:
            return None, Decision(False, str(exc))
        reason = missing_role(caller, method)
        return caller, Decision(reason is None, reason or "")

    def _refuse(self, caller: Caller | None, decision: Decision, context: grpc.ServicerContext) -> NoReturn:
        code = grpc.StatusCode.PERMISSION_DENIED if caller is not None else grpc.StatusCode.UNAUTHENTICATED
        if caller is None and decision.reason.startswith(KeysUnavailableError.PREFIX):
            code = grpc.StatusCode.UNAVAILABLE
        context.abort(code, decision.reason)
        raise AssertionError("context.abort returned")  # it raises; this line tells the type checker so

    def _record(
        self, method: str, caller: Caller | None, decision: Decision, request: Any, served: Served, ctx: Any
    ) -> None:
        if self.audit is not None:
            record = audit_record(
                method, caller, decision, request, served, _trace_id(), ctx.peer(), self.audit.keep_question
            )
            self.audit.write(record)

    @contextmanager
    def _call(self, method: str, request: Any, context: grpc.ServicerContext) -> Iterator[Served]:
        """One guarded call: its span, the caller admitted (else refused), the handler's body served as that
        caller, and the audit record of how it ended, whichever way it did."""
        with self._span(method, context):
            caller, decision = self._admit(method, context)
            served = Served(status="OK" if decision.allowed else _refusal(caller))
            try:
                if caller is None or not decision.allowed:
                    self._refuse(caller, decision, context)
                with calling_as(caller):
                    yield served
            except BaseException as exc:  # GeneratorExit: the client left a stream before its end
                served.status = "CANCELLED" if isinstance(exc, GeneratorExit) else _status(context, served.status)
                raise
            finally:
                self._record(method, caller, decision, request, served, context)

    def _unary(self, method: str, behavior: Behavior) -> Behavior:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            with self._call(method, request, context) as served:
                response = behavior(request, context)
                served.add_response(response)
                return response

        return guarded

    def _stream(self, method: str, behavior: Behavior) -> Behavior:
        def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._call(method, request, context) as served:
                for message in behavior(request, context):
                    served.add_response(message)
                    yield message

        return guarded

    def _span(self, method: str, context: grpc.ServicerContext) -> Any:
        """The call's span (the handler's spans are its children): a client's ``traceparent`` metadata continues
        the client's trace, and the audit record names the trace."""
        carried = {k: str(v) for k, v in context.invocation_metadata() if k in ("traceparent", "tracestate")}
        return TRACER.start_as_current_span(
            f"call {method}", context=extract_context(carried), attributes=span_attributes(rpc_method=method)
        )


def _refusal(caller: Caller | None) -> str:
    return "PERMISSION_DENIED" if caller is not None else "UNAUTHENTICATED"


def _status(context: Any, default: str) -> str:
    """The gRPC status a failed handler set (context.abort), else ``default`` when refused, else UNKNOWN."""
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return default if default != "OK" else "UNKNOWN"
