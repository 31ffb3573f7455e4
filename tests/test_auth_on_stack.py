"""Authenticated callers on the real stack (S3 -> Kafka -> embedder -> updater -> Milvus -> retrieval workers ->
the query service as its own process): no or a bad token is UNAUTHENTICATED, a token without the method's role is
PERMISSION_DENIED, health and reflection stay open (grpcurl too), a JWT and an API key are served, `mmrag search`
sends --token and prints a refusal as one line, and audit.v1 holds exactly one record per call, allowed or
refused, with the ids and versions it returned; `mmrag audit --object` says who saw the document."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmrag.grpc_tls import query_channel
from mmrag.object_store import s3_client
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.topics import Topics
from operator_cli.audit import audit_records
from tests.auth_tools import make_issuer, write_api_keys
from tests.kafka_tools import wait_for

pytestmark = pytest.mark.kafka

DOC = "Kafka consumer groups split the partitions of a topic between their members and commit their offsets."
QUESTION = "how do kafka consumer groups share partitions"


class Calls:
    """Calls the query service as one caller and notes what each call should leave in the audit trail."""

    def __init__(self, target: str, principal: str, token: str, log: list[tuple[Any, ...]]) -> None:
        self.principal, self.token, self.log = principal, token, log
        self.channel = query_channel(target, token=token)
        self.stub = query_pb2_grpc.QueryServiceStub(self.channel)

    def _note(self, method: str, call: Any) -> Any:
        try:
            reply = call()
        except grpc.RpcError as exc:
            self.log.append((self.principal, method, "deny", exc.code().name, ()))
            raise
        self.log.append((self.principal, method, "allow", "OK", _returned(reply)))
        return reply

    def search(self, text: str = QUESTION) -> query_pb2.SearchResponse:
        return self._note("Search", lambda: self.stub.Search(query_pb2.SearchQuery(text=text, top_k=5), timeout=15))

    def ask(self) -> list[query_pb2.AskResponse]:
        request = query_pb2.AskRequest(question=QUESTION, top_k=5)
        return self._note("Ask", lambda: list(self.stub.Ask(request, timeout=30)))  # type: ignore[no-any-return]

    def status(self, oid: str) -> query_pb2.ObjectStatusResponse:
        request = query_pb2.ObjectStatusRequest(object_id=oid)
        return self._note("GetObjectStatus", lambda: self.stub.GetObjectStatus(request, timeout=10))

    def refused(self, method: str) -> grpc.RpcError:
        call = {"Search": self.search, "Ask": self.ask, "GetObjectStatus": lambda: self.status("x/y")}[method]
        with pytest.raises(grpc.RpcError) as refused:
            call()
        return refused.value


def _returned(reply: Any) -> tuple[tuple[str, str], ...]:
    """The (object id, version) pairs a reply gave, each object once, in order."""
    pairs: dict[str, str] = {}
    if isinstance(reply, query_pb2.SearchResponse):
        pairs = {r.object_id: r.version for r in reversed(reply.results)}
    elif isinstance(reply, query_pb2.ObjectStatusResponse):
        pairs = {reply.object_id: reply.version}
    else:
        for event in reply:
            for s in [*event.sources.sources, *event.final.citations]:
                pairs.setdefault(s.object_id, s.version)
    return tuple(sorted(pairs.items()))


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("grpcurl")
    assert found, "grpcurl is built by scripts/setup.sh into ~/.cache/kafka-mmrag/tools/bin"
    return subprocess.run([found, "-plaintext", *args], capture_output=True, text=True, timeout=30)


def test_callers_roles_and_the_audit_trail_on_the_stack(  # noqa: PLR0915
    deployment: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from local_stack.stack import start_services
    from operator_cli.main import main

    issuer = make_issuer(tmp_path)
    keys = write_api_keys(tmp_path / "api-keys.json", {"svc-reports": (["staff"], ["search"])})
    auth = {
        **issuer.env(),
        "MMRAG_AUTH_MODE": "jwt+api-key",
        "MMRAG_AUTH_API_KEYS_FILE": str(tmp_path / "api-keys.json"),
    }
    names = ["sqs_bridge", "normalizer", "text_embedder", "index_updater"]
    services = [deployment.service(n) for n in names] + [deployment.service("query_service", **auth)]
    services += [deployment.service("retrieval_worker", str(k), MMRAG_SHARD=str(k)) for k in range(deployment.shards)]
    start_services(services)
    bucket, oid = deployment.bucket, f"{deployment.bucket}/docs/kafka.md"
    s3_client(deployment.s3_settings()).put_object(
        Bucket=bucket,
        Key="docs/kafka.md",
        Body=DOC.encode(),
        ContentType="text/markdown",
        Tagging="mmrag-readers=group:staff",  # readers from the object store (document permissions, issue 22)
    )
    target = f"127.0.0.1:{deployment.grpc_port}"
    log: list[tuple[Any, ...]] = []
    alice = Calls(target, "alice", issuer.mint_token("alice", ["staff"], ["search", "ask"]), log)
    bob = Calls(target, "bob", issuer.mint_token("bob", ["staff"], ["search"]), log)
    svc = Calls(target, "svc-reports", keys["svc-reports"], log)
    nobody = Calls(target, "", "", log)
    forged = Calls(
        target, "", make_issuer(_made(tmp_path / "impostor"), kid=issuer.kid).mint_token("alice", ["staff"]), log
    )
    wait_for(lambda: oid in {r.object_id for r in alice.search().results}, 180, "the document, searched by alice")

    for method in ("Search", "Ask", "GetObjectStatus"):
        refused = nobody.refused(method)
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED, method
        assert refused.details() == "no credentials -> send the metadata 'authorization: Bearer <token>'"
    refused = forged.refused("Search")
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED and "Signature verification failed" in refused.details()
    refused = bob.refused("Ask")
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.details() == "bob lacks the role 'ask' that Ask needs -> ask an admin to grant it"

    assert oid in {r.object_id for r in bob.search().results}
    assert oid in {r.object_id for r in svc.search().results}  # an API key
    version = alice.status(oid).version
    assert version and ((oid, version) in _returned(alice.ask()))

    with query_channel(target, token="") as channel:  # health and reflection: open without a token
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    listed = grpcurl(target, "list")
    assert "mmrag.v1.QueryService" in listed.stdout.split(), listed.stderr
    body = json.dumps({"text": QUESTION, "top_k": 5})
    said = grpcurl("-H", f"authorization: Bearer {alice.token}", "-d", body, target, "mmrag.v1.QueryService/Search")
    assert said.returncode == 0 and oid in said.stdout, said.stderr
    log.append(("alice", "Search", "allow", "OK", _returned_json(json.loads(said.stdout))))
    said = grpcurl("-d", body, target, "mmrag.v1.QueryService/Search")
    assert said.returncode != 0 and "Unauthenticated" in said.stderr, said.stderr
    log.append(("", "Search", "deny", "UNAUTHENTICATED", ()))

    monkeypatch.setenv("MMRAG_TOKEN", "")  # restored after the test: --token below sets it for this process
    monkeypatch.setenv("MMRAG_QUERY_TARGET", target)
    for name, value in deployment.env().items():
        monkeypatch.setenv(name, value)
    code = main(["search", QUESTION])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "UNAUTHENTICATED" in err and "--token" in err, err
    log.append(("", "Search", "deny", "UNAUTHENTICATED", ()))
    code = main(["search", QUESTION, "--top-k", "5", "--token", keys["svc-reports"], "--json"])
    found = json.loads(capsys.readouterr().out)
    assert code == 0 and oid in {r["object_id"] for r in found["results"]}
    log.append(("svc-reports", "Search", "allow", "OK", _returned_json(found)))

    topic = Topics(deployment.topic_prefix).audit
    wait_for(lambda: len(audit_records(deployment.endpoints.bootstrap_servers, topic)) >= len(log), 30, "records")
    records = audit_records(deployment.endpoints.bootstrap_servers, topic)
    trail = [
        (
            r["principal"],
            r["method"],
            r["decision"],
            r["status"],
            tuple(sorted((o["object_id"], o["version"]) for o in r["returned"])),
        )
        for r in records
    ]
    assert Counter(trail) == Counter(log)  # one record per call, allowed or refused, with what it returned
    assert all(len(r["trace_id"]) == 32 and r["at_ms"] > 0 for r in records)
    assert {r["reason"] for r in records if r["status"] == "PERMISSION_DENIED"} == {
        "bob lacks the role 'ask' that Ask needs -> ask an admin to grant it"
    }

    code = main(["audit", "--object", f"s3://{oid}", "--json"])
    saw = json.loads(capsys.readouterr().out)
    assert code == 0 and {r["principal"] for r in saw} == {"alice", "bob", "svc-reports"}
    code = main(["audit", "--principal", "bob", "--since", "1h", "--json"])
    assert {(r["method"], r["decision"]) for r in json.loads(capsys.readouterr().out)} == {
        ("Search", "allow"),
        ("Ask", "deny"),
    }


def _returned_json(reply: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """grpcurl's and `mmrag search --json`'s results (proto field names) as (object id, version) pairs."""
    return tuple(sorted({r["object_id"]: r.get("version", "") for r in reply.get("results", [])}.items()))


def _made(directory: Path) -> Path:
    directory.mkdir()
    return directory
