"""The evaluation/audit log: what one Ask's record holds (redacted, client identity without credentials), and on
the real broker: records produced fire-and-forget land on eval-log.v1 keyed by request id and come back through
`mmrag eval export --jsonl [--since]`."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from mmrag.kafka_clients import make_producer
from mmrag.pb.events_pb2 import SearchHit
from mmrag.pb.query_pb2 import AskFinal, AskSource, AskTimings
from mmrag.topics import Topics, ensure_topics
from query_service.eval_log import Client, EvalLog, eval_record
from query_service.types import ShardHit


def final(answer: str = "The choir has 42 members [1]. Mail [email redacted].") -> AskFinal:
    return AskFinal(
        answer=answer,
        citations=[AskSource(number=1, object_id="b/choir")],
        timings=AskTimings(retrieve_ms=12.5, first_token_ms=300.0, total_ms=900.0),
        is_degraded=True,
        degraded_reason="ungrounded",
        model="smollm2-135m",
    )


def record(request_id: str, question: str = "Who runs the choir? ann@example.org") -> dict[str, object]:
    hits = [ShardHit(SearchHit(vector_id="b/choir#0", object_id="b/choir", score=0.71), 1)]
    client = Client.from_grpc(
        "ipv4:127.0.0.1:5123", [("x-client-id", "notebook-7"), ("authorization", "Bearer s3cret"), ("user-agent", "t")]
    )
    return eval_record(request_id, question, hits, final(), "space-1", client, 1_700_000_000_000, {"email": 1})


@pytest.mark.unit
def test_a_record_holds_the_ask_redacted_with_who_asked_and_no_credentials() -> None:
    data = record("r1")
    assert data["question"] == "Who runs the choir? [email redacted]"
    assert data["answer"] == "The choir has 42 members [1]. Mail [email redacted]."
    assert data["redactions"] == {"email": 2}  # the question's, and the one taken out of the answer
    assert data["client"] == {"peer": "ipv4:127.0.0.1:5123", "x-client-id": "notebook-7", "user-agent": "t"}
    assert data["retrieved"] == [{"object_id": "b/choir", "vector_id": "b/choir#0", "score": pytest.approx(0.71)}]
    assert data["citations"] == [{"number": 1, "object_id": "b/choir"}]
    assert data["timings_ms"] == {"retrieve": 12.5, "first_token": 300.0, "total": 900.0}
    assert (data["degraded"], data["degraded_reason"], data["space_id"]) == (True, "ungrounded", "space-1")
    assert "s3cret" not in json.dumps(data)


@pytest.mark.kafka
def test_records_land_keyed_by_request_id_and_export_as_jsonl_since_a_time(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from operator_cli.main import main

    prefix = f"t-{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix)
    ensure_topics(bootstrap, topics, replication=1)
    producer = make_producer(bootstrap)
    log = EvalLog(producer, topics.eval_log)
    log.write(record("before"))
    assert producer.flush(15) == 0
    time.sleep(0.05)
    since_ms = int(time.time() * 1000)
    for rid in ("after-1", "after-2"):
        log.write(record(rid))
    assert producer.flush(15) == 0
    assert log.outcomes.failures == []
    monkeypatch.setenv("MMRAG_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("MMRAG_TOPIC_PREFIX", prefix)

    assert main(["eval", "export", "--jsonl"]) == 0
    everything = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["request_id"] for r in everything) == ["after-1", "after-2", "before"]
    assert everything[0]["question"] == "Who runs the choir? [email redacted]"

    assert main(["eval", "export", "--jsonl", "--since", str(since_ms)]) == 0
    out, err = capsys.readouterr()
    assert sorted(json.loads(line)["request_id"] for line in out.splitlines()) == ["after-1", "after-2"]
    assert "2 records" in err
