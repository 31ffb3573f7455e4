"""The operator commands against a real deployment: search, status, lag, offsets reset, dlq list/show/replay/purge.

Commands run through `operator_cli.main.main` in this process (argparse, the real gRPC and Kafka clients, the
friendly error path) with the deployment's MMRAG_* settings; one runs as `python -m operator_cli` to check the
entry point prints an error line, not a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from mmrag.object_store import S3ObjectStore
from tests.documents import pdf_bytes
from tests.kafka_tools import wait_for

pytestmark = pytest.mark.kafka

KAFKA_DOC = """# Consumer groups
Kafka consumer groups split the partitions of a topic between their members. Each partition is read by exactly
one member of the group, and the group commits offsets to remember how far it has read.
"""
TIDE_DOC = "Tide pools hold sea stars, anemones and hermit crabs between the high and the low water marks."
SOURDOUGH_DOC = "Sourdough bread rises with a starter of wild yeast and lactobacilli instead of baker's yeast."


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from operator_cli.main import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_of(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def status_of(capsys: pytest.CaptureFixture[str], oid: str) -> dict[str, Any] | None:
    code, out, _ = run(capsys, "status", f"s3://{oid}", "--json")
    return json.loads(out) if code == 0 else None


def state_of(capsys: pytest.CaptureFixture[str], oid: str) -> str | None:
    found = status_of(capsys, oid)
    return found["state"] if found else None


def top_hit(capsys: pytest.CaptureFixture[str], text: str) -> str | None:
    results = json_of(capsys, "search", text, "--top-k", "3")["results"]
    return results[0]["object_id"] if results else None


def group(lag: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((g for g in lag["groups"] if g["group"] == name), None)


def use_deployment(deployment: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in deployment.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MMRAG_QUERY_TARGET", f"127.0.0.1:{deployment.grpc_port}")


def start(deployment: Any, names: list[str], **extra: str) -> dict[str, Any]:
    from local_stack.stack import start_services

    services = {n: deployment.service(n, **(extra if n == "normalizer" else {})) for n in names}
    workers = [deployment.service("retrieval_worker", str(k), MMRAG_SHARD=str(k)) for k in range(deployment.shards)]
    start_services([*services.values(), *workers])
    return services


def assert_drained_without_marker_lag(capsys: pytest.CaptureFixture[str], prefix: str) -> None:
    """Everything consumed: lag 0 in every group, although objects.v1 (written in transactions) ends with commit
    markers that offsets alone would count as lag 1."""

    def drained() -> dict[str, Any] | None:
        lag = json_of(capsys, "lag")
        names = {g["group"] for g in lag["groups"]}
        wanted = {prefix + g for g in ("object-normalizer", "embedder-text", "index-updater")}
        return lag if wanted <= names and all(g["total_lag"] == 0 for g in lag["groups"]) else None

    lag = wait_for(drained, 60, "every group to drain")
    text = group(lag, prefix + "embedder-text")
    assert text is not None and text["state"] == "stable" and len(text["members"]) == 1
    marker_ends = [p for p in text["partitions"] if p["committed"] == p["end"] - 1 and p["lag"] == 0]
    assert marker_ends and all(p["markers"] == 1 and p["topic"].endswith("objects.v1") for p in marker_ends)


def test_search_status_lag_and_offsets(deployment, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from local_stack.stack import start_services

    names = ["sqs_bridge", "normalizer", "text_embedder", "index_updater", "query_service"]
    services = start(deployment, names)
    use_deployment(deployment, monkeypatch)
    store = S3ObjectStore(deployment.s3_settings(), "test")
    bucket = deployment.bucket
    kafka_doc, tide_doc = f"{bucket}/docs/kafka groups.md", f"{bucket}/docs/tide-pools.md"

    store.put(bucket, "docs/kafka groups.md", KAFKA_DOC.encode())
    wait_for(lambda: state_of(capsys, kafka_doc) == "indexed", 120, "the document to be indexed")
    indexed = status_of(capsys, kafka_doc)
    assert indexed is not None and indexed["version"] and len(indexed["space_id"]) == 10
    assert indexed["freshness_ms"] > 0 and indexed["indexed_at_ms"] >= indexed["event_time_ms"] > 0
    assert indexed["text_chunks"] >= 1
    code, table, _ = run(capsys, "status", f"s3://{kafka_doc}")
    assert code == 0 and "indexed" in table and indexed["version"] in table

    question = "how do kafka consumer groups share partitions"
    wait_for(lambda: top_hit(capsys, question) == kafka_doc, 30, "the document in search results")
    reply = json_of(capsys, "search", question, "--top-k", "3")
    hit = reply["results"][0]
    assert not reply["partial"] and hit["has_text"] and "consumer groups" in hit["text"] and hit["score"] > 0
    code, table, _ = run(capsys, "search", question)
    assert code == 0 and "kafka groups.md" in table and "text" in table
    for flags, expected in (
        (["--prefix", "docs/kafka", "--content-type", "text/markdown", "--since", "1h"], [kafka_doc]),
        (["--bucket", bucket, "--object", kafka_doc, "--modality", "text"], [kafka_doc]),
        (["--prefix", "nothing-here/"], []),
        (["--until", "1h"], []),  # uploaded within the hour: none before it
    ):
        found = json_of(capsys, "search", question, *flags)["results"]
        assert [r["object_id"] for r in found] == expected, flags
    code, _, err = run(capsys, "search", question, "--bucket", "Not_A_Bucket")
    assert code == 2 and "filter.buckets[0]" in err, err

    assert_drained_without_marker_lag(capsys, deployment.topic_prefix)
    updater = deployment.topic_prefix + "index-updater"  # groups carry the deployment's prefix, as topics do
    code, _, err = run(capsys, "offsets", "reset", "embedder-text", "--to", "earliest")  # the prefix may be left out
    assert code == 2 and "active member" in err and "stop them first" in err
    code, _, err = run(capsys, "offsets", "reset", "no-such-group", "--to", "earliest")
    assert code == 2 and "no consumer group 'no-such-group'" in err and "mmrag lag" in err

    services["index_updater"].stop()
    store.put(bucket, "docs/tide-pools.md", TIDE_DOC.encode())
    wait_for(lambda: state_of(capsys, tide_doc) == "pending", 60, "the new document to be pending")
    stopped = wait_for(
        lambda: (g := group(json_of(capsys, "lag", "--group", updater), updater)) and g["total_lag"] > 0 and g,
        60,
        "lag of the stopped index updater",
    )
    assert stopped["state"] == "empty" and stopped["members"] == []

    plan = json_of(capsys, "offsets", "reset", updater, "--to", "earliest", "--topic", "embeddings", "--dry-run")
    assert plan["dry_run"] and plan["moves"] and all(m["topic"].endswith("embeddings.v1") for m in plan["moves"])
    assert any(m["current"] is not None and m["target"] < m["current"] for m in plan["moves"])
    after_dry_run = group(json_of(capsys, "lag", "--group", "index-updater"), updater)
    assert after_dry_run is not None and after_dry_run["total_lag"] == stopped["total_lag"]
    code, table, _ = run(capsys, "offsets", "reset", "index-updater", "--to", "earliest", "--dry-run")
    assert code == 0 and f"dry run: would reset group {updater}" in table
    reset = json_of(capsys, "offsets", "reset", updater, "--to", "earliest", "--topic", "embeddings")
    committed = group(json_of(capsys, "lag", "--group", updater), updater)
    assert committed is not None
    assert {(p["topic"], p["partition"]): p["committed"] for p in committed["partitions"]} == {
        (m["topic"], m["partition"]): m["target"] for m in reset["moves"]
    }

    start_services([deployment.service("index_updater")])  # re-applies everything (idempotent), then the new one
    wait_for(lambda: state_of(capsys, tide_doc) == "indexed", 90, "the pending document to be indexed")
    store.delete(bucket, "docs/kafka groups.md")
    wait_for(lambda: state_of(capsys, kafka_doc) == "deleted", 60, "the deleted document's status")
    assert_failed_then_fixed_by_reupload(capsys, store, bucket)


def assert_failed_then_fixed_by_reupload(capsys: pytest.CaptureFixture[str], store: S3ObjectStore, bucket: str) -> None:
    """A corrupt PDF fails with the DLQ's reason; the same key uploaded again fixes it without any replay, and a
    replay of the old dead letter is refused as superseded."""
    report = f"{bucket}/reports/q3.pdf"
    store.put(bucket, "reports/q3.pdf", b"%PDF-1.4\n this is not really a pdf")
    wait_for(lambda: state_of(capsys, report) == "failed", 90, "the corrupt PDF to fail")
    failed = status_of(capsys, report)
    assert failed is not None and failed["failed_stage"] == "text_embedder"
    assert "not a readable PDF" in failed["detail"] and failed["fix"] == "re-export the PDF"
    shown = json_of(capsys, "dlq", "show", str(failed["dlq_offset"]))
    assert shown["headers"]["dlq-stage"] == "text_embedder" and shown["key"] == report
    assert shown["headers"]["dlq-source-topic"].endswith("objects.v1")
    assert shown["headers"]["version"] == failed["version"] == shown["version"]

    store.put(bucket, "reports/q3.pdf", pdf_bytes(["Quarterly report: the tide pools were counted twice."]))
    wait_for(lambda: state_of(capsys, report) == "indexed", 90, "the re-uploaded PDF to be indexed")
    fixed = status_of(capsys, report)
    assert fixed is not None and fixed["version"] != failed["version"]
    verdicts = json_of(capsys, "dlq", "replay", "--key", "reports/q3.pdf", "--dry-run")["dead_letters"]
    assert len(verdicts) == 1 and not verdicts[0]["replay"]
    assert verdicts[0]["reason"].startswith(f"superseded: the object is at version {fixed['version']}")


def dead_letters_of(capsys: pytest.CaptureFixture[str], oid: str) -> list[dict[str, Any]]:
    return [d for d in json_of(capsys, "dlq", "list", "--stage", "normalizer") if d["key"] == oid]


def test_dlq_replay_after_the_cause_is_fixed(deployment, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from local_stack.stack import start_services

    names = ["sqs_bridge", "normalizer", "text_embedder", "index_updater", "query_service"]
    services = start(deployment, names, MMRAG_ALLOWED_BUCKETS="another-bucket")
    use_deployment(deployment, monkeypatch)
    store = S3ObjectStore(deployment.s3_settings(), "test")
    oid = f"{deployment.bucket}/notes/sourdough.md"
    store.put(deployment.bucket, "notes/sourdough.md", SOURDOUGH_DOC.encode())

    first = wait_for(lambda: dead_letters_of(capsys, oid), 60, "the refused upload on the DLQ")[0]
    assert first["attempts"] == 1 and "bucket not allowed" in first["message"] and first["replay_of"] is None
    code, _, err = run(capsys, "dlq", "list", "--stage", "normalizr")  # a typo: nothing, and the stages there are
    assert code == 0 and "no dead letter of stage 'normalizr'" in err and ": normalizer" in err, err
    # the query service's status view follows the status topic a moment behind the DLQ, which the CLI reads directly
    refused = wait_for(lambda: (s := status_of(capsys, oid)) and s["state"] == "failed" and s, 30, "the failed status")
    assert refused["failed_stage"] == "normalizer"
    assert "MMRAG_ALLOWED_BUCKETS" in refused["fix"] and refused["dlq_offset"] == first["offset"]

    # replayed before the fix: it fails again, comes back once with its attempts carried on, and is not replayed
    # again by a selection that does not name its offset
    assert json_of(capsys, "dlq", "replay", "--stage", "normalizer")["replayed"] == 1
    again = wait_for(lambda: len(d := dead_letters_of(capsys, oid)) == 2 and d[1], 60, "the failed replay")
    assert again["replay_of"] == f"0:{first['offset']}" and again["attempts"] == 2
    second_run = json_of(capsys, "dlq", "replay", "--stage", "normalizer")
    assert second_run["replayed"] == 0
    reasons = {d["offset"]: d["reason"] for d in second_run["dead_letters"] if d["key"] == oid}
    assert reasons[first["offset"]].startswith("replayed already")
    assert reasons[again["offset"]].startswith(f"a replay of 0:{first['offset']} that failed again")

    services["normalizer"].stop()
    start_services([deployment.service("normalizer", MMRAG_ALLOWED_BUCKETS=f"another-bucket,{deployment.bucket}")])
    replayed = json_of(capsys, "dlq", "replay", "--offsets", str(again["offset"]))
    assert replayed["replayed"] == 1
    wait_for(lambda: state_of(capsys, oid) == "indexed", 120, "the replayed upload to be indexed")
    wait_for(lambda: top_hit(capsys, "wild yeast starter bread") == oid, 30, "the replayed upload in search results")
    assert [d["offset"] for d in dead_letters_of(capsys, oid)] == [first["offset"], again["offset"]]

    code, _, err = run(capsys, "dlq", "purge", "--before", str(again["offset"]))
    assert code == 2 and "add --yes" in err
    code, out, _ = run(capsys, "dlq", "purge", "--before", str(again["offset"]), "--yes")
    assert code == 0 and f"below offset {again['offset']} deleted" in out
    assert [d["offset"] for d in dead_letters_of(capsys, oid)] == [again["offset"]]

    entry = subprocess.run(
        [sys.executable, "-m", "operator_cli", "dlq", "show", "999999"],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert entry.returncode == 2 and "Traceback" not in entry.stderr
    assert entry.stderr.startswith("error: no dead letter at") and "mmrag dlq list" in entry.stderr
