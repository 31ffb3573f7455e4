"""The pipeline on the secured Kafka: every deployable connects as its own SCRAM principal holding exactly the ACLs of
its declaration (mmrag/access.py), and upload -> indexed -> Search -> Ask, a dead letter and a delete work as on the
plaintext stack; the operator CLI (as the admin) reads status over gRPC TLS and replays a dead letter (a re-index
space replaying objects.v1 with each stage as its own principal: slow). Anything a deployable touches beyond its
declaration would stop it (TOPIC/GROUP/TRANSACTIONAL_ID_AUTHORIZATION_FAILED, exit 78), so this run is also the check
that the declarations are complete. Afterwards no password appears in any log, the broker's included, nor in any dead
letter."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mmrag.access import ADMIN, DECLARATIONS
from mmrag.grpc_tls import query_channel
from mmrag.object_store import S3ObjectStore
from mmrag.pb import query_pb2, query_pb2_grpc
from producers.upload import upload_files
from tests.ask_tools import ask, start_with_corpus
from tests.kafka_tools import read_topic, wait_for
from tests.scripted_llm import scripted_llm
from tests.test_end_to_end import found_ids
from tests.test_operator_cli import json_of

pytestmark = [pytest.mark.kafka, pytest.mark.secure]

CORPUS = {
    "server-room.md": "The access code for the server room is 4417. The server room is in the basement.",
    "ferry.md": "The ferry from Lindholm to Skarra leaves at 7:40 every morning and takes two hours.",
}
QUESTION = "What is the access code of the server room?"


def copy_the_code_sentence(prompt: str) -> str:
    """A faithful model: the prompt's sentence about the access code, cited [1]."""
    found = re.search(r"[^.\n]*access code[^.\n]*\.", prompt)
    return f"{found.group(0).strip()} [1]" if found else "I do not know."


def assert_grpc_over_tls_only(port: int, ca: Path) -> None:
    """A plaintext call is refused; health and reflection answer over TLS (grpcurl -cacert too, when installed)."""
    target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as plain, pytest.raises(grpc.RpcError) as refused:
        query_pb2_grpc.QueryServiceStub(plain).Search(query_pb2.SearchQuery(text="server room"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with query_channel(target, ca) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        asked = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(asked, timeout=5)
        listed = {s.name for answer in answers for s in answer.list_services_response.service}
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    services = {"mmrag.v1.QueryService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    assert services <= listed, listed
    grpcurl = shutil.which("grpcurl")
    if grpcurl is not None:  # scripts/setup.sh builds it from the Go module proxy
        said = subprocess.run([grpcurl, "-cacert", str(ca), target, "list"], capture_output=True, text=True, check=True)
        assert services <= set(said.stdout.split()), said.stdout


def assert_no_secret_anywhere(dep: Any, passwords: list[str]) -> None:
    """No password in any log of the deployment's services, in the secured broker's log, nor in any dead letter."""
    security_dir = Path(dep.endpoints.security.dir)
    logs = [*sorted((dep.state_dir / "logs").glob("*.log")), *sorted(security_dir.parent.glob("node-*/*.log"))]
    assert len(logs) > 5, logs
    for path in logs:
        text = path.read_text(errors="replace")
        assert not [p for p in passwords if p in text], f"a password in {path}"
    for record in read_topic(dep.endpoints.bootstrap_servers, f"{dep.topic_prefix}dlq.v1", idle_s=1.0):
        seen = (record.value or b"").decode(errors="replace") + repr(record.headers)
        assert not [p for p in passwords if p in seen], f"a password in the dead letter {record.key}"


def assert_operator_cli_works_as_admin(dep: Any, capsys: pytest.CaptureFixture[str], broken: str) -> None:
    """The CLI as the stack's admin: object status over gRPC TLS, and a DLQ replay (a transactional producer) whose
    record fails again and comes back as a replay of the first."""
    assert json_of(capsys, "status", f"s3://{dep.bucket}/server-room.md")["state"] == "indexed"
    first = [d for d in json_of(capsys, "dlq", "list", "--stage", "text_embedder") if d["key"] == broken]
    assert len(first) == 1, first
    assert json_of(capsys, "dlq", "replay", "--stage", "text_embedder")["replayed"] == 1

    def dead_letters() -> list[dict[str, Any]]:
        return [d for d in json_of(capsys, "dlq", "list", "--stage", "text_embedder") if d["key"] == broken]

    again = wait_for(lambda: len(found := dead_letters()) == 2 and found[1], 60, "the replay's dead letter")
    assert again["replay_of"] == f"0:{first[0]['offset']}" and again["attempts"] == 2


@pytest.mark.slow
def test_reindex_on_the_secured_kafka(secure_deployment: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mmrag reindex`'s space applies its ACLs as the admin and runs each stage as its own principal: they replay
    objects.v1 into the space's topics and groups to the end, none refused (slow: ~2 min beyond the fixtures)."""
    from local_stack.stack import start_services
    from operator_cli.reindex import caught_up, progress, start_space, stop_space

    dep = secure_deployment
    for name, value in dep.env().items():
        monkeypatch.setenv(name, value)  # the operator CLI's deployment and identity (the admin's)
    start_services([dep.service("sqs_bridge"), dep.service("normalizer")])
    for name, text in CORPUS.items():
        (tmp_path / name).write_text(text)
    upload_files(S3ObjectStore(dep.s3_settings(), "test"), dep.bucket, [tmp_path / n for n in CORPUS])
    objects = f"{dep.topic_prefix}objects.v1"
    wait_for(lambda: len(read_topic(dep.endpoints.bootstrap_servers, objects)) == len(CORPUS), 60, "objects.v1")
    services = start_space("v2", {})
    try:
        wait_for(lambda: caught_up(progress("v2")), 300, "the re-index space caught up")
    finally:
        stop_space("v2")
    users = {s.env["MMRAG_KAFKA_SASL_USERNAME"] for s in services}
    assert users == {"text_embedder", "vision_embedder", "index_updater"}
    assert not [s.name for s in services if "refused by" in s.log_path.read_text()]


def test_pipeline_on_the_secured_kafka(
    secure_deployment: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = secure_deployment
    security = dep.endpoints.security
    for name, value in {**dep.env(), "MMRAG_QUERY_TARGET": f"127.0.0.1:{dep.grpc_port}"}.items():
        monkeypatch.setenv(name, value)  # the operator CLI's deployment and identity (the admin's)
    with scripted_llm(copy_the_code_sentence) as llm:
        worker = dep.service("llm_worker", MMRAG_LLM_BACKEND="openai", MMRAG_LLM_BASE_URL=llm.base_url)
        start_with_corpus(dep, CORPUS, "server room ferry", tmp_path, [dep.service("query_service"), worker])
        port, bucket = dep.grpc_port, dep.bucket

        final = ask(port, QUESTION).final
        assert final is not None and not final.is_degraded, final
        assert final.answer.startswith("The access code for the server room is 4417.")
        assert [c.object_id for c in final.citations] == [f"{bucket}/server-room.md"]

        store = S3ObjectStore(dep.s3_settings(), "test")
        (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
        upload_files(store, bucket, [tmp_path / "broken.png"])
        broken = f"{bucket}/broken.png"
        dlq = f"{dep.topic_prefix}dlq.v1"
        wait_for(lambda: [m for m in read_topic(dep.endpoints.bootstrap_servers, dlq) if m.key == broken], 60, "DLQ")

        store.delete(bucket, "ferry.md")
        wait_for(lambda: f"{bucket}/ferry.md" not in found_ids(port, text="ferry Lindholm"), 90, "the delete")
        assert f"{bucket}/server-room.md" in found_ids(port, text="server room access code")
        assert_grpc_over_tls_only(port, security.ca.cert_path)
        assert_operator_cli_works_as_admin(dep, capsys, broken)
    passwords = [security.password(user) for user in [ADMIN, *(d.name for d in DECLARATIONS)]]
    assert_no_secret_anywhere(dep, passwords)
