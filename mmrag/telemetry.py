"""Observability every deployable gets: /metrics, /healthz, /readyz over HTTP, logging, and W3C trace context
(exported over OTLP when configured: mmrag/tracing.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from mmrag.http_tls import check_pair, serve_tls
from mmrag.metrics import READY
from mmrag.tracing import extract_context, inject_context, setup_tracing

__all__ = ["Probes", "extract_context", "inject_context", "setup_logging", "setup_tracing"]

log = logging.getLogger(__name__)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("probe: " + format, *args)


class Probes:
    """Liveness and readiness of one service, served with Prometheus metrics on one HTTP port."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._live = True
        self._ready = False
        self._reason = "warming up"
        self._server: WSGIServer | None = None
        self._checks: dict[str, Callable[[], tuple[bool, str]]] = {}

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready, self._reason = ready, reason

    def set_dead(self, reason: str) -> None:
        self._live, self._reason = False, reason

    def add_check(self, name: str, check: Callable[[], tuple[bool, str]]) -> None:
        """A readiness part: (ok, detail). /readyz fails while one is not ok and lists every detail."""
        self._checks[name] = check

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def reason(self) -> str:
        """Why the service is not ready (or not live); empty when it is."""
        return self._reason

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            READY.set(1 if self._readiness()[0] else 0)
            return make_wsgi_app()(environ, start_response)
        if path in ("/healthz", "/readyz"):
            ok, checks = self._readiness() if path == "/readyz" else (self._live, {})
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain")])
            lines = [f"{self.service}: {'ok' if ok else self._reason or 'a check failed'}"]
            lines += [f"{name}: {detail}" for name, (_, detail) in checks.items()]
            return ["\n".join(lines).encode() + b"\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"try /metrics, /healthz or /readyz\n"]

    def _readiness(self) -> tuple[bool, dict[str, tuple[bool, str]]]:
        checks = {name: check() for name, check in self._checks.items()}
        return self._live and self._ready and all(ok for ok, _ in checks.values()), checks

    def serve(self, host: str, port: int, tls_cert: Path | None = None, tls_key: Path | None = None) -> int:
        """Starts the probe server in a daemon thread, over TLS when given a certificate and key; returns the bound
        port."""
        check_pair(tls_cert, tls_key, "MMRAG_PROBE_TLS_CERT / MMRAG_PROBE_TLS_KEY")
        self._server = make_server(host, port, self._app, handler_class=_QuietHandler)
        scheme = serve_tls(self._server, tls_cert, tls_key)
        threading.Thread(target=self._server.serve_forever, name="probes", daemon=True).start()
        bound = int(self._server.server_port)
        log.info("%s probes on %s://%s:%d (/metrics /healthz /readyz)", self.service, scheme, host, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
