"""HTTP webhook -> s3-events.v1, for MinIO's (and Ceph's) webhook notification target.

POST a notification body (MinIO's `{"EventName", "Key", "Records"}`, or any envelope producers.s3_events accepts)
with `Authorization: Bearer <MMRAG_WEBHOOK_TOKEN>`. The answer is 200 only once Kafka acknowledged the records;
400 with the parse error for a malformed body (which went to the DLQ with its raw bytes); 401 for a missing or
wrong token; 413 for a body over the limit; 503 when Kafka did not take it in time (the sender retries, and the
normalizer drops the duplicate). GET/HEAD answer 200 for the sender's liveness check.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import sys
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr

from mmrag.http_tls import check_pair, serve_tls
from mmrag.service import service_main
from mmrag.settings import BaseServiceSettings
from mmrag.telemetry import Probes
from producers.event_source import Notification, SourceBatch
from producers.publisher import ChangePublisher

log = logging.getLogger(__name__)
STAGE = "webhook"


class WebhookSettings(BaseServiceSettings):
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(default=8080, ge=0, description="the notification endpoint; 0 = any free port")
    webhook_tls_cert: Path | None = Field(default=None, description="serve the endpoint over TLS: certificate PEM")
    webhook_tls_key: Path | None = Field(default=None, description="... and its private key PEM (both or neither)")
    webhook_token: SecretStr = Field(default=SecretStr(""), description="the bearer token senders must present")
    webhook_max_body_bytes: int = Field(default=1 << 20, ge=1024)
    webhook_wait_s: float = Field(default=30.0, gt=0, description="how long a request waits for Kafka before 503")
    webhook_batch: int = Field(default=100, ge=1, description="requests published per flush")


@dataclass
class PendingRequest:
    """A request waiting for its records to be durable; the publisher's thread sets the answer."""

    body: bytes
    request_id: str
    answered: threading.Event = field(default_factory=threading.Event)
    status: int = 503
    message: str = "Kafka did not take the notification in time; retry"

    def answer(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        self.answered.set()


class WebhookSource:
    """The EventSource behind the HTTP endpoint: requests queue up, the publisher batches them."""

    name = "webhook"

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self.port = 0
        self._queue: queue.Queue[PendingRequest] = queue.Queue()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        if not self.settings.webhook_token.get_secret_value():
            raise ValueError("MMRAG_WEBHOOK_TOKEN is empty -> set the bearer token the notification target sends")
        s = self.settings
        check_pair(s.webhook_tls_cert, s.webhook_tls_key, "MMRAG_WEBHOOK_TLS_CERT / MMRAG_WEBHOOK_TLS_KEY")
        handler = type("Handler", (WebhookHandler,), {"source": self})
        self._server = ThreadingHTTPServer((s.webhook_host, s.webhook_port), handler)
        self._server.daemon_threads = True
        scheme = serve_tls(self._server, s.webhook_tls_cert, s.webhook_tls_key)
        self.port = int(self._server.server_port)
        threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True).start()
        log.info("%s: notifications on %s://%s:%d/", STAGE, scheme, s.webhook_host, self.port)

    def submit(self, body: bytes) -> PendingRequest:
        """Queues a body for the publisher and waits for its answer (503 if none comes in time)."""
        pending = PendingRequest(body, uuid.uuid4().hex[:16])
        self._queue.put(pending)
        pending.answered.wait(self.settings.webhook_wait_s)
        return pending

    def receive(self) -> SourceBatch:
        try:
            taken = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return SourceBatch()
        while len(taken) < self.settings.webhook_batch and not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return SourceBatch([Notification(p.body, p.request_id, p) for p in taken])

    def acknowledge(self, batch: SourceBatch, problems: Sequence[str | None]) -> None:
        for note, problem in zip(batch.notifications, problems, strict=True):
            note.handle.answer(400 if problem else 200, problem or "accepted")

    def release(self, batch: SourceBatch, reason: str) -> None:
        for note in batch.notifications:
            note.handle.answer(503, f"Kafka did not take the notification ({reason}); retry")

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        while not self._queue.empty():
            self._queue.get_nowait().answer(503, "the webhook is stopping; retry")


class WebhookHandler(BaseHTTPRequestHandler):
    source: WebhookSource

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        settings = self.source.settings
        expected = f"Bearer {settings.webhook_token.get_secret_value()}"
        if not hmac.compare_digest(self.headers.get("Authorization", "").encode(), expected.encode()):
            self._reply(401, "missing or wrong bearer token -> send MMRAG_WEBHOOK_TOKEN as the target's auth token")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > settings.webhook_max_body_bytes:
            self._reply(413, f"body of {length} bytes is over {settings.webhook_max_body_bytes}")
            return
        pending = self.source.submit(self.rfile.read(length))
        self._reply(pending.status, pending.message, pending.request_id)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._reply(200, "webhook ready: POST S3 notifications here")

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.end_headers()

    def _reply(self, status: int, message: str, request_id: str = "") -> None:
        payload = json.dumps({"status": status, "message": message, "request_id": request_id}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s: " + format, STAGE, *args)


def build(settings: WebhookSettings, probes: Probes) -> ChangePublisher:
    return ChangePublisher(settings, WebhookSource(settings), STAGE, probes)


def main(argv: list[str] | None = None) -> int:
    return service_main(STAGE, WebhookSettings, build, argv)


if __name__ == "__main__":
    sys.exit(main())
