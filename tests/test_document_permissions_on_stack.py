"""Document permissions on the real stack (S3 with object tags -> SQS -> normalizer -> embedder -> updater ->
Milvus -> retrieval workers -> the query service with JWT callers -> an LLM worker): three principals, documents
shared, private to each, untagged and revoked. For every path (Search text, Search with filters, the result cache,
Ask's sources, prompt and answer, the answer cache, GetObjectStatus, `mmrag search/ask/status`) each principal gets
exactly what its reader tokens may see; a reader removed by a tag change loses the document on every path within
the pipeline's bound, cached answers included. The leak checks (path x principal) are counted and printed."""

from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from local_stack.services import Service
from mmrag.grpc_tls import query_channel
from mmrag.object_store import s3_client
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.pb.events_pb2 import IndexState, IndexStatus
from mmrag.topics import Topics
from tests.auth_tools import make_issuer
from tests.kafka_tools import read_topic, wait_for
from tests.scripted_llm import ScriptedLlm

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

QUESTION = "How do Kafka consumer groups share partitions?"
# codename -> (key, mmrag-readers tag or None for an untagged object); every memo answers the question alike
MEMOS = {
    "alpha": ("docs/alpha.md", "group:finance group:eng user:carol"),  # shared by all three
    "bravo": ("docs/bravo.md", "group:finance"),  # alice's group only
    "charlie": ("docs/charlie.md", "group:eng"),  # bob's group only
    "delta": ("docs/delta.md", "user:carol"),  # carol alone, by name
    "echo": ("docs/echo.md", None),  # untagged: MMRAG_DEFAULT_READERS is empty, so nobody (auth is on)
    "foxtrot": ("docs/foxtrot.md", "group:finance group:eng"),  # revoked from finance during the test
}
REVOCATIONS = 10  # tag changes timed (each given back between)
PRINCIPALS = {"alice": ["finance"], "bob": ["eng"], "carol": []}
SEES = {
    "alice": {"alpha", "bravo", "foxtrot"},
    "bob": {"alpha", "charlie", "foxtrot"},
    "carol": {"alpha", "delta"},
}


def memo_text(codename: str) -> str:
    return f"Kafka consumer groups share the partitions of a topic among their members (memo {codename.upper()})."


def cite_first_memo(prompt: str) -> str:
    """A faithful model: the prompt's first memo sentence, cited [1] (its source)."""
    found = re.search(r"Kafka consumer groups share[^.\n]*\.", prompt)
    return f"{found.group(0).strip()} [1]" if found else "I do not know."


def codenames(text: str) -> set[str]:
    return {c for c in MEMOS if c.upper() in text}


class Caller:
    def __init__(self, target: str, name: str, token: str) -> None:
        self.name, self.token = name, token
        self.stub = query_pb2_grpc.QueryServiceStub(query_channel(target, token=token))

    def search(self, **filters: Any) -> query_pb2.SearchResponse:
        request = query_pb2.SearchQuery(text=QUESTION, top_k=10, filter=query_pb2.Filter(**filters))
        return self.stub.Search(request, timeout=20)

    def ask(self) -> tuple[query_pb2.AskSources, query_pb2.AskFinal, str]:
        sources, final, answer = query_pb2.AskSources(), query_pb2.AskFinal(), ""
        for event in self.stub.Ask(query_pb2.AskRequest(question=QUESTION, top_k=10), timeout=120):
            kind = event.WhichOneof("event")
            if kind == "sources":
                sources = event.sources
            elif kind == "delta":
                answer += event.delta.text
            elif kind == "final":
                final = event.final
        return sources, final, answer

    def status(self, oid: str) -> tuple[str, str]:
        """(state, '') or ('', the NOT_FOUND details with the object id taken out)."""
        try:
            return self.stub.GetObjectStatus(query_pb2.ObjectStatusRequest(object_id=oid), timeout=10).state, ""
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
            return "", str(exc.details()).replace(oid, "<id>")


class Checks:
    """Counts each leak check: one path for one principal, its answer compared with exactly what it may see."""

    def __init__(self) -> None:
        self.count = 0

    def same(self, path: str, principal: str, got: set[str], want: set[str]) -> None:
        self.count += 1
        assert got == want, f"{path} for {principal}: got {sorted(got)}, may see {sorted(want)}"

    def within(self, path: str, principal: str, got: set[str], allowed: set[str]) -> None:
        """Something, and nothing beyond what the principal may see (an answer need not name every source)."""
        self.count += 1
        assert got and got <= allowed, f"{path} for {principal}: got {sorted(got)}, may see {sorted(allowed)}"


def test_each_principal_gets_exactly_what_it_may_see_on_every_path(
    deployment: Any, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from local_stack.stack import start_services

    issuer = make_issuer(tmp_path)
    scripted = ScriptedLlm(cite_first_memo)
    scripted.start()
    request.addfinalizer(scripted.stop)
    llm_env = {
        **deployment.env(),
        "MMRAG_INSTANCE_ID": "llm_worker-0",
        "MMRAG_LLM_BACKEND": "openai",
        "MMRAG_LLM_BASE_URL": scripted.base_url,
    }
    llm = Service("llm_worker-0", "consumers.llm_worker", llm_env, deployment.state_dir / "logs")
    query = deployment.service("query_service", **issuer.env(), MMRAG_RESULT_CACHE_TTL_S="300")
    names = ("sqs_bridge", "normalizer", "text_embedder", "index_updater")
    services = [deployment.service(n) for n in names] + [query, llm]
    services += [deployment.service("retrieval_worker", str(k), MMRAG_SHARD=str(k)) for k in range(deployment.shards)]
    start_services(services)
    s3 = s3_client(deployment.s3_settings())
    bucket = deployment.bucket
    oid = {c: f"{bucket}/{key}" for c, (key, _) in MEMOS.items()}
    for codename, (key, readers) in MEMOS.items():
        tagging = {"Tagging": f"mmrag-readers={readers}"} if readers else {}
        s3.put_object(Bucket=bucket, Key=key, Body=memo_text(codename).encode(), ContentType="text/markdown", **tagging)
    target = f"127.0.0.1:{deployment.grpc_port}"
    callers = {
        p: Caller(target, p, issuer.mint_token(p, groups, ["search", "ask"])) for p, groups in PRINCIPALS.items()
    }
    status_topic = Topics(deployment.topic_prefix).index_status
    wait_for(lambda: indexed(deployment, status_topic, set(oid.values())), 180, "every memo indexed")
    checks = Checks()

    for name, caller in callers.items():
        check_every_path(checks, name, caller, SEES[name], oid, bucket, scripted.prompts)
    checks.same("LLM prompts, all callers", "all", codenames("\n".join(scripted.prompts)), set().union(*SEES.values()))
    check_cli(checks, callers, oid, monkeypatch, capsys, target)

    took = sorted(revocations(s3, bucket, callers["alice"], oid, REVOCATIONS))
    check_every_path(checks, "alice", callers["alice"], SEES["alice"] - {"foxtrot"}, oid, bucket, scripted.prompts)
    check_every_path(checks, "bob", callers["bob"], SEES["bob"], oid, bucket, scripted.prompts)  # bob keeps it
    p50, worst = statistics.median(took), took[-1]
    print(
        f"\nleak checks: {checks.count} (paths x principals); revocation on every path (tag change -> hidden on "
        f"Search, status and Ask), {len(took)} times: p50 {p50:.2f} s, max {worst:.2f} s"
    )


def check_every_path(  # noqa: PLR0913
    checks: Checks, name: str, caller: Caller, sees: set[str], oid: dict[str, str], bucket: str, prompts: list[str]
) -> None:
    first = caller.search()
    checks.same("Search", name, codenames_of(first), sees)
    again = caller.search()
    checks.same("Search, result cache", name, codenames_of(again) if again.from_cache else {"<not cached>"}, sees)
    filtered = caller.search(buckets=[bucket], key_prefix="docs/")
    checks.same("Search with filters", name, codenames_of(filtered), sees)
    only = caller.search(object_ids=list(oid.values()))
    checks.same("Search by object ids", name, codenames_of(only), sees)
    asked = len(prompts)
    sources, final, answer = caller.ask()
    checks.same("Ask sources", name, {codename_of(s) for s in sources.sources}, sees)
    if not final.from_cache:  # generated now (after a revocation the wait's own Ask may have been cached)
        checks.within("Ask prompt", name, codenames("\n".join(prompts[asked:])), sees)
    checks.within("Ask answer and citations", name, codenames(answer) | {codename_of(c) for c in final.citations}, sees)
    cached_sources, cached, _ = caller.ask()
    assert cached.from_cache, f"{name}'s second Ask is answered from the answer cache"
    checks.same("Ask, answer cache", name, {codename_of(s) for s in cached_sources.sources}, sees)
    missing = caller.status(f"{bucket}/docs/never-uploaded.md")[1]
    for codename, object_id in oid.items():
        state, refused = caller.status(object_id)
        checks.same(f"GetObjectStatus {codename}", name, {codename} if state else set(), {codename} & sees)
        assert state or refused == missing, "a hidden object reads exactly as a missing one"


def check_cli(
    checks: Checks, callers: dict[str, Caller], oid: dict[str, str], monkeypatch: Any, capsys: Any, target: str
) -> None:
    from operator_cli.main import main

    monkeypatch.setenv("MMRAG_QUERY_TARGET", target)
    for name, caller in callers.items():
        monkeypatch.setenv("MMRAG_TOKEN", caller.token)
        assert main(["search", QUESTION, "--json"]) == 0
        found = json.loads(capsys.readouterr().out)
        checks.same("mmrag search", name, {codename_of_id(r["object_id"]) for r in found["results"]}, SEES[name])
        main(["ask", QUESTION, "--json"])
        answered = json.loads(capsys.readouterr().out)
        listed = {codename_of_id(s["object_id"]) for s in answered["sources"]}
        checks.same("mmrag ask", name, listed, SEES[name])
        shown = set()
        for codename, object_id in oid.items():
            if main(["status", f"s3://{object_id}", "--json"]) == 0:
                shown.add(codename)
            capsys.readouterr()
        checks.same("mmrag status", name, shown, SEES[name])


def revocations(s3: Any, bucket: str, alice: Caller, oid: dict[str, str], rounds: int) -> list[float]:
    """Takes group:finance off foxtrot's tag ``rounds`` times (giving it back between them, waiting until alice
    sees it again); returns each time's seconds from the tag change until alice sees it on no path: Search,
    GetObjectStatus and Ask's sources (cached answers included). Ends revoked."""

    def tag(readers: str) -> float:
        tags = {"TagSet": [{"Key": "mmrag-readers", "Value": readers}]}
        s3.put_object_tagging(Bucket=bucket, Key=MEMOS["foxtrot"][0], Tagging=tags)
        return time.monotonic()

    seen: dict[str, bool] = {}

    def gone() -> bool:
        seen["search"] = "foxtrot" in codenames_of(alice.search())
        seen["status"] = bool(alice.status(oid["foxtrot"])[0])
        seen["ask"] = "foxtrot" in {codename_of(s) for s in alice.ask()[0].sources}
        return not any(seen.values())

    took = []
    for n in range(rounds):
        if n:
            tag("group:finance group:eng")
            wait_for(lambda: "foxtrot" in codenames_of(alice.search()), 60, "foxtrot given back to alice", 0.1)
        start = tag("group:eng")
        wait_for(gone, 60, "foxtrot revoked from alice on every path", interval_s=0.05)
        took.append(time.monotonic() - start)
    return took


def indexed(deployment: Any, topic: str, oids: set[str]) -> bool:
    done = set()
    for landed in read_topic(deployment.endpoints.bootstrap_servers, topic, idle_s=0.5):
        status = IndexStatus()
        status.ParseFromString(landed.value or b"")
        if status.state == IndexState.INDEX_STATE_INDEXED:
            done.add(status.object_id)
    return oids <= done


def codename_of_id(object_id: str) -> str:
    return object_id.rsplit("/", 1)[-1].removesuffix(".md")


def codename_of(source: Any) -> str:
    return codename_of_id(source.object_id)


def codenames_of(reply: query_pb2.SearchResponse) -> set[str]:
    return {codename_of_id(r.object_id) for r in reply.results}
