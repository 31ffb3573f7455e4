"""The evaluation and audit log: one JSON record per Ask on ``eval-log.v1`` (key: the request id), produced
fire-and-forget on the query service's producer; `mmrag eval export --jsonl` reads it back.

A record holds what offline evaluation needs (question, retrieved ids + scores, answer, citations, timings,
degraded + reason, space, redactions) and the audit trail (who: the client's gRPC peer and identifying metadata;
when). Question and answer are PII-redacted before they are written, like everything else that is logged."""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from mmrag import pii
from mmrag.messages import Output
from mmrag.pb.query_pb2 import AskFinal
from mmrag.producing import Deliveries, produce_outputs
from query_service.types import ShardHit

log = logging.getLogger(__name__)
RECORDS = Counter(
    "mmrag_eval_log_records_total", "Ask records produced to eval-log.v1 by delivery outcome", ["outcome"]
)
SCHEMA = "mmrag.eval-log.v1"
# gRPC metadata a client may send to say who it is; credentials (authorization, cookies) are never recorded.
IDENTITY_KEYS = ("x-client-id", "x-user-id", "x-request-id", "user-agent")


@dataclass(frozen=True)
class Client:
    """Who asked: the gRPC peer (ipv4:127.0.0.1:5123) and the identifying metadata present."""

    peer: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_grpc(cls, peer: str, metadata: Sequence[tuple[str, Any]]) -> Client:
        kept = {k: str(v) for k, v in metadata if k in IDENTITY_KEYS}
        return cls(peer, kept)


def eval_record(
    request_id: str,
    question: str,
    hits: Sequence[ShardHit],
    final: AskFinal,
    space_id: str,
    client: Client,
    asked_at_ms: int,
    answer_redactions: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The record of one Ask; ``final.answer`` is already redacted (``answer_redactions``: what was taken out of
    it), the question is redacted here."""
    asked = pii.redact(question)
    counts = asked.counts + collections.Counter(answer_redactions or {})
    return {
        "schema": SCHEMA,
        "request_id": request_id,
        "asked_at_ms": asked_at_ms,
        "client": {"peer": client.peer, **client.metadata},
        "space_id": space_id,
        "question": asked.text,
        "retrieved": [{"object_id": h.hit.object_id, "vector_id": h.hit.vector_id, "score": h.hit.score} for h in hits],
        "answer": final.answer,
        "citations": [{"number": c.number, "object_id": c.object_id} for c in final.citations],
        "citations_inferred": final.citations_inferred,
        "timings_ms": {
            "retrieve": final.timings.retrieve_ms,
            "first_token": final.timings.first_token_ms,
            "total": final.timings.total_ms,
        },
        "degraded": final.is_degraded,
        "degraded_reason": final.degraded_reason,
        "model": final.model,
        "redactions": dict(counts),
    }


class _Outcomes(Deliveries):
    def __call__(self, err: Any, msg: Any) -> None:
        super().__call__(err, msg)
        RECORDS.labels("failed" if err is not None else "delivered").inc()
        if err is not None:
            log.warning("eval-log record %s not delivered: %s", msg.key(), err)


class EvalLog:
    """Produces records without waiting for them (an Ask never waits on its log); refusals are counted and
    logged by the delivery report (mmrag_eval_log_records_total{outcome="failed"})."""

    def __init__(self, producer: Any, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.outcomes = _Outcomes()

    def write(self, record: dict[str, Any]) -> None:
        value = json.dumps(record, ensure_ascii=False, sort_keys=True).encode()
        output = Output(self.topic, record["request_id"], value, {"content-type": "application/json"})
        produce_outputs(self.producer, [output], self.outcomes)
        self.producer.poll(0)
