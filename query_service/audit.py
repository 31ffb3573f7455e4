"""The audit trail: one JSON record per Search, Ask and GetObjectStatus on ``audit.v1`` (allowed and refused),
produced fire-and-forget (a call never waits on it); `mmrag audit` reads it back ("who saw this document?").

A record says who (principal, groups, gRPC peer), what (method, filters, the question only per
MMRAG_AUDIT_QUESTION and PII-redacted), when (ms), the trace id, the decision (allow/deny) with its reason and the
call's gRPC status, and what the caller was given: the object ids and versions returned. Key: the principal, so one
principal's records stay in order on one partition."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from prometheus_client import Counter

from mmrag import pii
from mmrag.messages import Output
from mmrag.producing import Deliveries, produce_outputs
from query_service.callers import Caller

log = logging.getLogger(__name__)
RECORDS = Counter("mmrag_audit_records_total", "records produced to audit.v1 by delivery outcome", ["outcome"])
SCHEMA = "mmrag.audit.v1"


@dataclass
class Served:
    """What one call gave its caller, filled in as the answer is made (a stream adds as it goes)."""

    returned: dict[str, str] = field(default_factory=dict)  # object id -> version, in the order given
    status: str = "OK"

    def add(self, object_id: str, version: str) -> None:
        if object_id:
            self.returned.setdefault(object_id, version)

    def add_response(self, message: Message) -> None:
        """The objects a Search, Ask or GetObjectStatus response message names."""
        for result in getattr(message, "results", ()):  # SearchResponse
            self.add(result.object_id, result.version)
        if message.DESCRIPTOR.name == "AskResponse":
            event = message.WhichOneof("event")
            inner = getattr(message, event) if event else None
            for source in list(getattr(inner, "sources", ())) + list(getattr(inner, "citations", ())):
                self.add(source.object_id, source.version)
        if message.DESCRIPTOR.name == "ObjectStatusResponse":
            self.add(message.object_id, message.version)  # type: ignore[attr-defined]


def _asked(request: Message, keep_question: bool) -> dict[str, Any]:
    """The question (Ask) or query text (Search), redacted, or only its length; an image query's size."""
    text = getattr(request, "question", None) or getattr(request, "text", None) or ""
    out: dict[str, Any] = {"question_chars": len(text)}
    if keep_question and text:
        redacted = pii.redact(text)
        out["question"] = redacted.text
        out["redactions"] = dict(redacted.counts)
    if getattr(request, "image", b""):
        out["image_bytes"] = len(request.image)  # type: ignore[attr-defined]
    return out


def _filters(request: Message) -> dict[str, Any]:
    if request.DESCRIPTOR.name == "ObjectStatusRequest":
        return {"object_id": request.object_id}  # type: ignore[attr-defined]
    filters = MessageToDict(request.filter) if request.HasField("filter") else {}  # type: ignore[attr-defined]
    if getattr(request, "raw_chunks", False):
        filters["raw_chunks"] = True
    return filters


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


def audit_record(
    method: str,
    caller: Caller | None,
    decision: Decision,
    request: Message | None,
    served: Served,
    trace_id: str,
    peer: str,
    keep_question: bool,
) -> dict[str, Any]:
    """One call's record; ``caller`` None: the call was not authenticated; ``request`` None: never decoded."""
    return {
        "schema": SCHEMA,
        "record_id": uuid.uuid4().hex,
        "at_ms": int(time.time() * 1000),
        "principal": caller.principal if caller is not None else "",
        "groups": sorted(caller.groups) if caller is not None else [],
        "unrestricted": bool(caller and caller.unrestricted),
        "peer": peer,
        "method": method,
        "trace_id": trace_id,
        "decision": "allow" if decision.allowed else "deny",
        "reason": decision.reason,
        "status": served.status,
        "filters": _filters(request) if request is not None else {},
        **(_asked(request, keep_question) if request is not None else {}),
        "returned": [{"object_id": o, "version": v} for o, v in served.returned.items()],
    }


class _Outcomes(Deliveries):
    """Counts and logs delivery reports (keeps no list: a long-running server would grow it forever)."""

    def __call__(self, err: Any, msg: Any) -> None:
        RECORDS.labels("failed" if err is not None else "delivered").inc()
        if err is not None:
            log.warning("audit record of %s not delivered to %s: %s", msg.key(), msg.topic(), err)


class AuditLog:
    """Produces records without waiting for them; a refused record is counted
    (mmrag_audit_records_total{outcome="failed"}) and logged, never fails the call."""

    def __init__(self, producer: Any, topic: str, keep_question: bool) -> None:
        self.producer = producer
        self.topic = topic
        self.keep_question = keep_question
        self.outcomes = _Outcomes()

    def write(self, record: dict[str, Any]) -> None:
        value = json.dumps(record, ensure_ascii=False, sort_keys=True).encode()
        output = Output(self.topic, record["principal"] or "-", value, {"content-type": "application/json"})
        try:
            produce_outputs(self.producer, [output], self.outcomes)
            self.producer.poll(0)
        except Exception:  # noqa: BLE001 - an audit failure is logged and counted, the call still answers
            RECORDS.labels("failed").inc()
            log.exception("audit record of %s %s not produced to %s", record["principal"], record["method"], self.topic)
