"""Caller authentication: JWTs verified against a JWKS (expired, wrong issuer/audience, wrong key, unknown key id),
API keys looked up by hash, roles gating methods, and the call guard on a real in-process gRPC server: refusals
with the right status and reason, health and reflection open, the caller set for the handler, one audit record per
call holding the returned ids."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mmrag.grpc_tls import query_channel
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.tracing import setup_tracing
from query_service.audit import AuditLog
from query_service.auth import Authenticator, AuthError, missing_role
from query_service.auth_settings import AuthSettings
from query_service.call_guard import CallGuard
from query_service.callers import ANONYMOUS, NO_CALLER, Caller, current_caller
from query_service.server import SERVICE_NAME
from tests.auth_tools import Issuer, make_issuer, write_api_keys

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    return make_issuer(tmp_path_factory.mktemp("jwks"))


def settings(**values: Any) -> AuthSettings:
    return AuthSettings(**values)


def jwt_auth(issuer: Issuer, **values: Any) -> Authenticator:
    s = {
        "auth_mode": "jwt",
        "auth_jwks_url": str(issuer.jwks_file),
        "auth_jwt_issuer": issuer.issuer,
        "auth_jwt_audience": issuer.audience,
        "auth_jwt_leeway_s": 0,
        **values,
    }
    return Authenticator(settings(**s))


def test_a_valid_jwt_gives_its_principal_groups_and_roles(issuer: Issuer) -> None:
    token = issuer.mint_token("alice", ["finance", "staff"], ["search"])
    caller = jwt_auth(issuer).caller(f"Bearer {token}")
    assert caller == Caller("alice", frozenset({"finance", "staff"}), frozenset({"search"}))
    assert caller.reader_tokens() == {"user:alice", "group:finance", "group:staff"}
    assert not caller.unrestricted


@pytest.mark.parametrize(
    ("mint", "says"),
    [
        ({"expires_in_s": -60}, "Signature has expired"),
        ({"issuer": "https://evil.test"}, "Invalid issuer"),
        ({"audience": "someone-else"}, "Audience doesn't match"),
        ({"kid": "no-such-key"}, "Unable to find a signing key"),
    ],
)
def test_bad_jwts_are_refused_with_the_reason(issuer: Issuer, mint: dict[str, Any], says: str) -> None:
    token = issuer.mint_token("alice", **mint)
    with pytest.raises(AuthError, match=says) as refused:
        jwt_auth(issuer).caller(f"Bearer {token}")
    assert "->" in str(refused.value) and "\n" not in str(refused.value)


def test_a_jwt_signed_by_another_key_with_the_same_kid_is_refused(issuer: Issuer, tmp_path: Path) -> None:
    impostor = make_issuer(tmp_path, kid=issuer.kid)  # same key id, its own private key
    with pytest.raises(AuthError, match="Signature verification failed"):
        jwt_auth(issuer).caller(f"Bearer {impostor.mint_token('mallory')}")


def test_leeway_admits_a_token_just_expired(issuer: Issuer) -> None:
    token = issuer.mint_token("alice", expires_in_s=-5)
    assert jwt_auth(issuer, auth_jwt_leeway_s=30).caller(f"Bearer {token}").principal == "alice"


def test_claim_names_are_configurable_nested_or_space_separated(issuer: Issuer) -> None:
    token = issuer.mint_token(
        "ignored", extra={"email": "bob@example.test", "realm_access": {"roles": ["ask"]}, "grp": "a b"}
    )
    auth = jwt_auth(
        issuer, auth_principal_claim="email", auth_roles_claim="realm_access.roles", auth_groups_claim="grp"
    )
    assert auth.caller(f"Bearer {token}") == Caller("bob@example.test", frozenset({"a", "b"}), frozenset({"ask"}))


def test_a_key_added_to_the_jwks_later_is_fetched(tmp_path: Path) -> None:
    first = make_issuer(tmp_path, kid="k1")
    auth = jwt_auth(first)
    assert auth.caller(f"Bearer {first.mint_token('alice')}").principal == "alice"
    second = make_issuer(tmp_path, kid="k2")  # the issuer rotates: the JWKS now holds both keys
    both = [json.loads(first.jwks_file.read_text())["keys"][0], json.loads(second.jwks_file.read_text())["keys"][0]]
    first.jwks_file.write_text(json.dumps({"keys": both}))
    assert auth.caller(f"Bearer {second.mint_token('bob')}").principal == "bob"


def test_api_keys_are_looked_up_by_hash_and_reread_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keys = write_api_keys(path, {"carol": (["ops"], ["search"])})
    assert keys["carol"] not in path.read_text()  # stored hashed
    auth = Authenticator(settings(auth_mode="api-key", auth_api_keys_file=path))
    assert auth.caller(f"Bearer {keys['carol']}") == Caller("carol", frozenset({"ops"}), frozenset({"search"}))
    with pytest.raises(AuthError, match="unknown API key"):
        auth.caller("Bearer mmrag_not-a-key")
    time.sleep(0.01)
    rotated = write_api_keys(path, {"dave": ([], ["ask"])})
    with pytest.raises(AuthError, match="unknown API key"):
        auth.caller(f"Bearer {keys['carol']}")  # removed from the file: refused without a restart
    assert auth.caller(f"Bearer {rotated['dave']}").principal == "dave"


def test_jwt_and_api_key_together_tell_them_apart(issuer: Issuer, tmp_path: Path) -> None:
    keys = write_api_keys(tmp_path / "keys.json", {"svc": ([], ["search"])})
    auth = jwt_auth(issuer, auth_mode="jwt+api-key", auth_api_keys_file=tmp_path / "keys.json")
    assert auth.caller(f"Bearer {keys['svc']}").principal == "svc"
    assert auth.caller(f"Bearer {issuer.mint_token('alice')}").principal == "alice"


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwYXNz", "Bearer "])
def test_missing_or_malformed_credentials_are_refused(issuer: Issuer, header: str | None) -> None:
    with pytest.raises(AuthError, match="authorization"):
        jwt_auth(issuer).caller(header)


def test_auth_off_is_anonymous_unrestricted_and_logged_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        auth = Authenticator(settings(auth_mode="off"))
    assert auth.caller(None) is ANONYMOUS and ANONYMOUS.unrestricted
    assert any("AUTH IS OFF" in r.message for r in caplog.records if r.levelname == "WARNING")


def test_an_auth_mode_without_its_keys_stops_the_start_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="MMRAG_AUTH_JWKS_URL"):
        Authenticator(settings(auth_mode="jwt"))
    with pytest.raises(ValueError, match="MMRAG_AUTH_API_KEYS_FILE"):
        Authenticator(settings(auth_mode="api-key"))


def test_roles_gate_methods() -> None:
    searcher = Caller("alice", roles=frozenset({"search"}))
    assert missing_role(searcher, "Search") is None and missing_role(searcher, "GetObjectStatus") is None
    assert "lacks the role 'ask'" in (missing_role(searcher, "Ask") or "")
    assert missing_role(ANONYMOUS, "Ask") is None
    assert current_caller() is NO_CALLER and NO_CALLER.reader_tokens() == frozenset()


class Recorder:
    """Collects what the guard produces, as the Kafka producer would receive it."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def produce(self, topic: str, key: bytes, value: bytes, **_: Any) -> None:
        self.records.append(json.loads(value))

    def poll(self, _: float) -> int:
        return 0


class EchoServicer(query_pb2_grpc.QueryServiceServicer):
    """Answers with the caller it was served as: proves the guard set it on the handler's thread."""

    def Search(self, request: query_pb2.SearchQuery, context: Any) -> query_pb2.SearchResponse:  # noqa: N802
        caller = current_caller()
        return query_pb2.SearchResponse(
            results=[query_pb2.SearchResult(object_id=f"b/{caller.principal}", version="v1")]
        )

    def Ask(self, request: query_pb2.AskRequest, context: Any) -> Iterator[query_pb2.AskResponse]:  # noqa: N802
        source = query_pb2.AskSource(number=1, object_id=f"b/{current_caller().principal}", version="v2")
        yield query_pb2.AskResponse(sources=query_pb2.AskSources(sources=[source]))
        if request.question == "slow":  # a stream the client leaves: wait for it to go
            deadline = time.monotonic() + 5
            while context.is_active() and time.monotonic() < deadline:
                time.sleep(0.01)
        yield query_pb2.AskResponse(final=query_pb2.AskFinal(answer="yes", citations=[source]))


@pytest.fixture
def guarded(issuer: Issuer) -> Iterator[tuple[str, Recorder]]:
    setup_tracing("query_service")  # as the service does: spans carry a trace id even when none are exported
    recorder = Recorder()
    guard = CallGuard(SERVICE_NAME, jwt_auth(issuer), AuditLog(recorder, "audit.v1", keep_question=True))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[guard])
    query_pb2_grpc.add_QueryServiceServicer_to_server(EchoServicer(), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", recorder
    finally:
        server.stop(0).wait()


def test_the_guard_refuses_admits_and_audits_every_call(guarded: tuple[str, Recorder], issuer: Issuer) -> None:
    target, recorder = guarded
    query = query_pb2.SearchQuery(text="mail jane@example.com", filter=query_pb2.Filter(buckets=["b"]))
    with query_channel(target, token="") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as none:
            stub.Search(query, timeout=5)
        assert none.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "send the metadata 'authorization: Bearer <token>'" in (none.value.details() or "")
        health_reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health_reply.status == health_pb2.HealthCheckResponse.SERVING  # open without a token
    with query_channel(target, token=issuer.mint_token("alice", ["finance"], ["search"])) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        assert [r.object_id for r in stub.Search(query, timeout=5).results] == ["b/alice"]
        with pytest.raises(grpc.RpcError) as denied:
            list(stub.Ask(query_pb2.AskRequest(question="why?"), timeout=5))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "alice lacks the role 'ask'" in (denied.value.details() or "")
    with query_channel(target, token=issuer.mint_token("bob", [], ["ask"])) as channel:
        events = list(query_pb2_grpc.QueryServiceStub(channel).Ask(query_pb2.AskRequest(question="why?"), timeout=5))
        assert events[-1].final.answer == "yes"
    deadline = time.monotonic() + 5
    while len(recorder.records) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)  # the record is written after the response is sent
    rows = [(r["principal"], r["method"], r["decision"], r["status"]) for r in recorder.records]
    assert rows == [
        ("", "Search", "deny", "UNAUTHENTICATED"),
        ("alice", "Search", "allow", "OK"),
        ("alice", "Ask", "deny", "PERMISSION_DENIED"),
        ("bob", "Ask", "allow", "OK"),
    ]
    allowed = recorder.records[1]
    assert allowed["returned"] == [{"object_id": "b/alice", "version": "v1"}]
    assert allowed["filters"] == {"buckets": ["b"]} and allowed["groups"] == ["finance"]
    assert allowed["question"] == "mail [email redacted]" and allowed["redactions"] == {"email": 1}
    assert recorder.records[3]["returned"] == [{"object_id": "b/bob", "version": "v2"}]
    assert recorder.records[2]["returned"] == [] and "lacks the role" in recorder.records[2]["reason"]
    assert all(len(r["trace_id"]) == 32 for r in recorder.records)


def test_records_keep_no_question_unless_told() -> None:
    from query_service.audit import Decision, Served, audit_record

    record = audit_record(
        "Search", ANONYMOUS, Decision(True), query_pb2.SearchQuery(text="secret plan"), Served(), "", "peer", False
    )
    assert "question" not in record and record["question_chars"] == len("secret plan")
    assert record["principal"] == "anonymous" and record["unrestricted"] is True


def test_a_caller_set_on_one_thread_is_not_seen_on_another() -> None:
    from query_service.callers import calling_as

    seen: list[Caller] = []
    with calling_as(Caller("alice")):
        thread = threading.Thread(target=lambda: seen.append(current_caller()))
        thread.start()
        thread.join()
    assert seen == [NO_CALLER]  # fails closed: a thread that lost the context sees nothing


def test_keys_that_cannot_be_fetched_are_unavailable_not_a_verdict(
    issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    from local_stack.processes import free_port
    from query_service.auth import KeysUnavailableError

    auth = jwt_auth(issuer, auth_jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json")  # nothing listens there
    with caplog.at_level("INFO"):
        auth.warm_up()  # not fatal: said at start
        jwt_auth(issuer).warm_up()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "JWKS" in r.getMessage()]
    assert said[0][0] == "WARNING" and "not fetched at start" in said[0][1]
    assert said[1] == ("INFO", f"JWKS {issuer.jwks_file}: 1 keys")
    with pytest.raises(KeysUnavailableError, match="could not be fetched .* -> retry"):
        auth.caller(f"Bearer {issuer.mint_token('alice')}")


def test_a_stream_the_client_leaves_is_audited_as_cancelled_with_what_it_got(
    guarded: tuple[str, Recorder], issuer: Issuer
) -> None:
    target, recorder = guarded
    with query_channel(target, token=issuer.mint_token("carol", [], ["ask"])) as channel:
        call = query_pb2_grpc.QueryServiceStub(channel).Ask(query_pb2.AskRequest(question="slow"), timeout=10)
        assert next(call).sources.sources[0].object_id == "b/carol"
        call.cancel()
    deadline = time.monotonic() + 10
    while not recorder.records and time.monotonic() < deadline:
        time.sleep(0.05)
    (record,) = recorder.records
    assert (record["principal"], record["status"]) == ("carol", "CANCELLED")
    assert record["returned"] == [{"object_id": "b/carol", "version": "v2"}]


def test_a_jwks_served_over_http_verifies_tokens(issuer: Issuer) -> None:
    """The production path: PyJWKClient fetching the provider's jwks_uri (here a real local HTTP server)."""
    import functools
    from http.server import HTTPServer, SimpleHTTPRequestHandler

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(issuer.jwks_file.parent))
    http = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{http.server_port}/{issuer.jwks_file.name}"
        auth = jwt_auth(issuer, auth_jwks_url=url)
        assert auth.caller(f"Bearer {issuer.mint_token('alice', ['staff'])}").groups == {"staff"}
        with pytest.raises(AuthError, match="Unable to find a signing key"):
            auth.caller(f"Bearer {issuer.mint_token('alice', kid='rotated-away')}")
    finally:
        http.shutdown()
        http.server_close()


def test_mmrag_audit_selects_who_saw_an_object_and_shows_the_version() -> None:
    from rich.console import Console

    from operator_cli.audit import audit_table, select

    saw = {"principal": "alice", "method": "Search", "decision": "allow", "status": "OK", "at_ms": 1}
    records = [
        {**saw, "returned": [{"object_id": "b/a.md", "version": "v7"}]},
        {**saw, "principal": "bob", "returned": [{"object_id": "b/other.md", "version": "v1"}]},
        {**saw, "principal": "", "decision": "deny", "status": "UNAUTHENTICATED", "reason": "no credentials"},
    ]
    assert [r["principal"] for r in select(records, None, "b/a.md")] == ["alice"]
    assert [r["principal"] for r in select(records, "bob", None)] == ["bob"]
    console = Console(width=200, record=True)
    console.print(audit_table(select(records, None, "b/a.md"), "b/a.md"))
    shown = console.export_text()
    assert "1 calls that returned b/a.md" in shown and "alice" in shown and "version v7" in shown
