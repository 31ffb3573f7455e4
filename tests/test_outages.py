"""Fault drills on the real pipeline (real broker, milvus-lite server, local S3): a dependency that is down is
back-pressure, never a dead letter; a bad item is dead-lettered alone.

- Milvus stopped longer than the retry budget while uploads go on: zero DLQ records, the updater's readiness red
  naming Milvus, then every object indexed once and Search answering after milvus-lite restarts on the same port and
  data dir, with no service restarted.
- The local S3 unreachable when the embedders read the objects of events already in Kafka: the same. moto keeps
  its data in memory only, so the store is cut off by a TCP link in front of a private moto (port refusing, open
  connections reset: what a client sees when the store stops) and mended on the same port.
- One batch with poison items among good ones through the index updater: one DLQ record for each poison item, naming
  it; the good ones indexed.
- (slow) A 3-broker cluster with topics at RF 3: the broker leading the most partitions SIGKILLed under upload load;
  every object indexed once, no deployable restarted, and what was uploaded after the kill indexed within 10 s of its
  upload.

Each drill prints its figures (pytest -s): objects, DLQ records, lost, duplicated status records, outage length,
time to recover after the dependency returned, peak RSS of each process.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from confluent_kafka import Producer

from local_stack.stack import Deployment, Endpoints, start_services
from mmrag.object_store import S3ObjectStore
from mmrag.pb.events_pb2 import Chunk, EmbeddingBatch, IndexState, IndexStatus, MediaKind, Modality
from tests.documents import circle_png
from tests.drill_tools import (
    Figures,
    assert_all_serving,
    busiest_broker,
    dump_stacks,
    probe,
    read_to_end,
    readiness,
    red_because,
    stop_times,
    wait_for_transactions,
    wait_until,
)
from tests.tcp_link import TcpLink
from tests.test_awkward_keys import deployment_index
from tests.test_end_to_end import search

pytestmark = pytest.mark.kafka
INDEXED = IndexState.INDEX_STATE_INDEXED
BACKOFF = {"MMRAG_BACKOFF_MAX_S": "4"}  # the default 30 s would only make the drills slower to recover
TOPICS = [
    "sourdough bread rises with a starter of flour and water",
    "tide pools shelter sea anemones and starfish at low tide",
    "volcanoes erupt molten lava and clouds of ash",
    "bees make honey from the nectar of flowers",
    "glaciers carve deep valleys out of solid rock",
    "jazz musicians improvise over chord changes",
    "tomato plants need full sun and steady watering",
    "comets have icy nuclei and long glowing tails",
    "origami folds a square of paper into a crane",
    "lighthouses guide ships safely along the coast",
    "chess players open with the sicilian defence",
    "owls hunt mice at night with silent wings",
]


def note(n: int) -> bytes:
    return f"# Note {n}\nThis note is about {TOPICS[n % len(TOPICS)]}.\n".encode()


def statuses(deployment: Deployment) -> dict[str, list[IndexStatus]]:
    """Every index-status record per object of the deployment's bucket, in order."""
    found: dict[str, list[IndexStatus]] = {}
    topic = f"{deployment.topic_prefix}index-status.v1"
    for m in read_to_end(deployment.endpoints.bootstrap_servers, topic):
        if m.key and m.key.startswith(f"{deployment.bucket}/"):
            found.setdefault(m.key, []).append(IndexStatus.FromString(m.value or b""))
    return found


def indexed(deployment: Deployment) -> set[str]:
    return {oid for oid, s in statuses(deployment).items() if s[-1].state == INDEXED}


def dead_letters(deployment: Deployment) -> list[tuple[str | None, dict[str, str]]]:
    records = read_to_end(deployment.endpoints.bootstrap_servers, f"{deployment.topic_prefix}dlq.v1")
    return [(m.key, m.headers) for m in records]


def delivery_figures(figures: Figures, deployment: Deployment, oids: set[str], dlq: list[Any]) -> None:
    """Objects, DLQ records, lost (never indexed) and duplicated (INDEXED status records beyond one per object)."""
    found = statuses(deployment)
    done = {oid for oid, s in found.items() if s[-1].state == INDEXED}
    figures.values.update(
        objects=len(oids),
        dlq_records=len(dlq),
        lost=len(oids - done),
        duplicated_status=sum(max(0, sum(s.state == INDEXED for s in found.get(o, [])) - 1) for o in oids),
    )
    waits = waits_after(found, oids, 0)
    if waits:  # upload (S3 event time) to indexed, per object: what a user waited through the fault
        figures.values["upload_to_indexed_s"] = {"median": round(waits[len(waits) // 2], 1), "max": round(waits[-1], 1)}


def assert_rows(deployment: Deployment, expected: dict[str, tuple[int, bool]]) -> None:
    """Each object has exactly its expected rows (count, has_image) in the deployment's index, nothing else."""
    index = deployment_index(deployment)
    for oid, (count, image) in expected.items():
        rows = index.rows_of(oid)
        assert len(rows) == count and len({r.vector_id for r in rows}) == count, (oid, rows)
        assert all(r.object_id == oid and r.has_image == image for r in rows), oid
    assert index.count() == sum(count for count, _ in expected.values())


def upload(store: S3ObjectStore, bucket: str, objects: dict[str, bytes]) -> set[str]:
    for key, data in objects.items():
        store.put(bucket, key, data, "image/png" if key.endswith(".png") else "text/markdown")
    return {f"{bucket}/{key}" for key in objects}


@pytest.mark.slow  # a fault drill: Milvus stopped for longer than the retry budget (~100 s with its setup)
def test_milvus_down_longer_than_the_retry_budget_is_back_pressure(
    deployment: Deployment, infra: Endpoints, tmp_path: Path
) -> None:
    from local_stack.milvus import start_milvus_lite, stop_milvus_lite
    from local_stack.processes import alive_pid, free_port

    milvus_dir, port = tmp_path / "milvus-private", free_port()
    uri = start_milvus_lite(milvus_dir, port)  # private: the session's milvus-lite keeps serving other tests
    figures = Figures("milvus-stopped")
    try:
        deployment.endpoints = Endpoints(infra.bootstrap_servers, infra.s3_endpoint_url, uri)
        names = ["sqs_bridge", "normalizer", "text_embedder", "index_updater", "query_service"]
        services = [deployment.service(n, **BACKOFF) for n in names]
        services += [deployment.service("retrieval_worker", str(k), MMRAG_SHARD=str(k), **BACKOFF) for k in (0, 1)]
        start_services(services)
        updater = services[3]

        def processes() -> list[tuple[str, int | None]]:
            return [(s.name, s.pid) for s in services] + [("milvus-lite", alive_pid(milvus_dir / "milvus.json"))]

        store, bucket = S3ObjectStore(deployment.s3_settings(), "test"), deployment.bucket
        before = upload(store, bucket, {f"notes/{n:02d}.md": note(n) for n in range(3)})
        assert wait_until(lambda: before <= indexed(deployment), 120), "the pipeline indexes before the outage"

        figures.sample_rss(processes())
        stop_milvus_lite(milvus_dir)
        stopped = time.monotonic()
        during: set[str] = set()
        searches: list[str] = []
        for n in range(3, 12):  # uploads go on while Milvus is down; searches meet the outage too
            during |= upload(store, bucket, {f"notes/{n:02d}.md": note(n)})
            if n % 4 == 3:
                searches.append(_search_outcome(deployment.grpc_port, TOPICS[n]))
            time.sleep(1.5)
        figures.values["search_while_down"] = sorted(set(searches))
        reason = wait_until(lambda: red_because(updater, "milvus"), 90)
        assert reason, f"updater readiness while Milvus is down: {readiness(updater)}"
        figures.values["readyz_while_down"] = reason.strip()[:300]
        time.sleep(max(0.0, 25 - (time.monotonic() - stopped)))  # well past the retry budget (<= 10 s)
        assert red_because(updater, "milvus"), "readiness stays red for as long as Milvus is down"

        start_milvus_lite(milvus_dir, port)
        back = time.monotonic()
        figures.values["outage_s"] = round(back - stopped, 1)
        oids = before | during
        all_in = wait_until(lambda: oids <= indexed(deployment), 180)
        figures.values["recover_index_s"] = round(time.monotonic() - back, 1)
        probe = f"{bucket}/notes/07.md"  # uploaded while Milvus was down
        answered = wait_until(lambda: _answers(deployment.grpc_port, TOPICS[7], probe), 60)
        figures.values["recover_search_s"] = round(time.monotonic() - back, 1)
        dlq = dead_letters(deployment)
        delivery_figures(figures, deployment, oids, dlq)
        figures.sample_rss(processes())

        assert dlq == [], "an outage dead-letters nothing"
        assert all_in, f"not indexed after Milvus returned: {sorted(oids - indexed(deployment))}"
        assert answered, "Search does not answer after Milvus returned"
        assert_rows(deployment, dict.fromkeys(oids, (1, False)))
        assert_all_serving(services)
        figures.values["stop_s"] = stop_times(services)
    finally:
        figures.print()
        stop_milvus_lite(milvus_dir)


def _search_outcome(port: int, text: str) -> str:
    """What a Search returns: full, partial (missing shards named), degraded, from the cache, or a gRPC error."""
    try:
        reply = search(port, text=text)
    except grpc.RpcError as exc:
        return f"error {exc.code().name}"
    how = [f"partial, missing shards {list(reply.missing_shards)}"] if reply.partial else ["full"]
    how += [f"degraded={reply.degraded}"] if reply.degraded else []
    return ", ".join(how + (["from cache"] if reply.from_cache else []))


def _answers(port: int, text: str, oid: str) -> bool:
    """A complete Search answer from the vector index (not partial, degraded or cached) that ranks ``oid`` first."""
    try:
        reply = search(port, text=text)
    except grpc.RpcError:
        return False
    fresh = not (reply.partial or reply.degraded or reply.from_cache)
    return fresh and bool(reply.results) and reply.results[0].object_id == oid


@pytest.mark.slow  # a fault drill: the object store stopped under uploads (~75 s)
def test_object_store_unreachable_is_back_pressure(deployment: Deployment, infra: Endpoints, tmp_path: Path) -> None:
    from local_stack.s3 import start_moto, stop_moto

    moto_dir = tmp_path / "s3-private"
    moto_dir.mkdir()
    moto_url = start_moto(moto_dir)
    link = TcpLink(int(moto_url.rsplit(":", 1)[1])).mend()
    figures = Figures("s3-unreachable")
    try:
        deployment.endpoints = Endpoints(infra.bootstrap_servers, link.url, infra.milvus_uri)
        deployment.prepare()  # bucket and queue on the private store
        names = ("sqs_bridge", "normalizer", "index_updater", "text_embedder", "vision_embedder")
        services = start_services([deployment.service(n, **BACKOFF) for n in names])
        embedders = services[3:]
        for embedder in embedders:  # frozen until the store is away, so they read nothing before
            os.kill(embedder.pid or 0, signal.SIGSTOP)
        store, bucket = S3ObjectStore(deployment.s3_settings(), "test"), deployment.bucket
        objects = {f"notes/{n:02d}.md": note(n) for n in range(4)}
        objects |= {f"img/circle-{n}.png": circle_png() for n in range(2)}
        oids = upload(store, bucket, objects)
        events = f"{deployment.topic_prefix}objects.v1"
        in_kafka = wait_until(lambda: oids <= {m.key for m in read_to_end(infra.bootstrap_servers, events)}, 90)
        assert in_kafka, "every upload's event on objects.v1 before the store goes away"

        link.cut()
        cut = time.monotonic()
        for embedder in embedders:
            os.kill(embedder.pid or 0, signal.SIGCONT)
        away = [(e, "object store") for e in embedders] + [(services[0], "SQS")]  # the bridge's queue is away too
        for service, words in away:
            reason = wait_until(partial(red_because, service, words), 120)
            assert reason, f"{service.name} readiness while the store is away: {readiness(service)}"
            figures.values[f"readyz_{service.name}"] = reason.strip()[:300]
        time.sleep(max(10.0, 25 - (time.monotonic() - cut)))  # still backing off, well past the retry budget
        assert all(red_because(s, w) for s, w in away), "red for as long as the store is away"

        link.mend()
        back = time.monotonic()
        figures.values["outage_s"] = round(back - cut, 1)
        all_in = wait_until(lambda: oids <= indexed(deployment), 180)
        figures.values["recover_index_s"] = round(time.monotonic() - back, 1)
        dlq = dead_letters(deployment)
        delivery_figures(figures, deployment, oids, dlq)
        figures.sample_rss((s.name, s.pid) for s in services)

        assert dlq == [], "an unreachable store dead-letters nothing"
        assert all_in, f"not indexed after the store returned: {sorted(oids - indexed(deployment))}"
        expected = {f"{bucket}/{k}": (1, k.endswith(".png")) for k in objects}
        assert_rows(deployment, expected)
        assert_all_serving(services)
        figures.values["stop_s"] = stop_times(services)
    finally:
        figures.print()
        link.cut()
        stop_moto(moto_dir)


def embedding_batch(deployment: Deployment, key: str, n: int, dims: int | None = None, version: str = "") -> bytes:
    """A text EmbeddingBatch as the text embedder writes it (the space's model, one chunk)."""
    from mmrag.settings import SpaceSettings
    from mmrag.space import space_from_settings

    space = space_from_settings(SpaceSettings(clip_model_dir=deployment.clip_model_dir))
    text = note(n).decode()
    vector = np.random.default_rng(n).standard_normal(dims or space.text_dim).astype(np.float32)
    return EmbeddingBatch(
        object_id=f"{deployment.bucket}/{key}",
        version=version or f"v{n}",
        modality=Modality.MODALITY_TEXT,
        model_id=space.text_model_id,
        dim=space.text_dim,
        chunks=[Chunk(index=0, text=text, char_start=0, char_end=len(text), page=1, vector=vector.tolist())],
        event_time_ms=1000 + n,
        media_kind=MediaKind.MEDIA_KIND_TEXT,
    ).SerializeToString()


def test_poison_items_in_a_batch_are_dead_lettered_alone(deployment: Deployment) -> None:
    """Two kinds of poison in one batch of the updater: a vector of the wrong size (fusion refuses it: that item's
    PermanentError naming it) and a version Milvus refuses (the adapter's PermanentError for that item). A batch
    failing as a whole, isolated item by item, is tests/test_runner.py's."""
    good = {f"good/{n:02d}.md": embedding_batch(deployment, f"good/{n:02d}.md", n) for n in range(6)}
    poison = {
        "poison/wrong-size.md": embedding_batch(deployment, "poison/wrong-size.md", 90, dims=3),
        "poison/long-version.md": embedding_batch(deployment, "poison/long-version.md", 91, version="v" * 600),
    }
    producer = Producer({"bootstrap.servers": deployment.endpoints.bootstrap_servers})
    keys = list(good)
    for key in [*keys[:3], "poison/wrong-size.md", *keys[3:5], "poison/long-version.md", keys[5]]:
        value = {**good, **poison}[key]
        producer.produce(
            f"{deployment.topic_prefix}embeddings.v1", key=f"{deployment.bucket}/{key}", value=value, partition=0
        )
    assert producer.flush(10) == 0
    deployment.service("index_updater", MMRAG_MAX_WAIT_MS="2000").start()  # all 8 arrive as one batch
    oids = {f"{deployment.bucket}/{k}" for k in good}
    all_in = wait_until(lambda: oids <= indexed(deployment), 120)
    wait_until(lambda: len(dead_letters(deployment)) >= 2, 30)
    dlq = dead_letters(deployment)

    assert all_in, f"good items not indexed: {sorted(oids - indexed(deployment))}"
    by_key = {key: headers for key, headers in dlq}
    assert len(dlq) == 2 and set(by_key) == {f"{deployment.bucket}/{k}" for k in poison}, dlq
    wrong_size = by_key[f"{deployment.bucket}/poison/wrong-size.md"]
    assert wrong_size["dlq-stage"] == "index_updater" and "3 dims" in wrong_size["dlq-error-message"]
    assert "poison/wrong-size.md" in wrong_size["dlq-error-message"], "the error names the object"
    long_version = by_key[f"{deployment.bucket}/poison/long-version.md"]
    assert long_version["dlq-error-class"] == "PermanentError"
    assert f"{deployment.bucket}/poison/long-version.md" in long_version["dlq-error-message"]
    assert all(h["dlq-source-topic"] == f"{deployment.topic_prefix}embeddings.v1" for h in by_key.values())
    assert_rows(deployment, dict.fromkeys(oids, (1, False)))
    found = statuses(deployment)
    assert {oid: [s.state for s in found[oid]] for oid in oids} == {oid: [INDEXED] for oid in oids}
    assert set(found) == oids, "no status for a dead-lettered item"


FAILOVER_WAIT_S = 10.0


def waits_after(found: dict[str, list[IndexStatus]], oids: set[str], since_ms: float) -> list[float]:
    """Upload (S3 event time) to indexed, in seconds and sorted, of the objects uploaded after ``since_ms``."""
    return sorted(
        round((s.indexed_at_ms - s.event_time_ms) / 1000, 1)
        for o in oids
        for s in found.get(o, [])[-1:]
        if s.state == INDEXED and s.event_time_ms >= since_ms
    )


def stage_delays(deployment: Deployment, found: dict[str, list[IndexStatus]], since_ms: float) -> dict[str, float]:
    """For the objects uploaded after ``since_ms`` (their statuses ``found``): the longest wait from upload to each
    stage's record (when the normalizer, then the embedders, produced it; the status is the updater's), to tell which
    stage held them."""
    prefix, bootstrap = deployment.topic_prefix, deployment.endpoints.bootstrap_servers
    uploaded = {o: s[-1].event_time_ms for o, s in found.items() if s[-1].event_time_ms >= since_ms}
    slowest: dict[str, float] = {}
    for stage, topic in (("normalizer", "objects.v1"), ("embedders", "embeddings.v1")):
        for m in read_to_end(bootstrap, f"{prefix}{topic}"):
            if m.key in uploaded:
                wait = round((m.timestamp_ms - uploaded[m.key]) / 1000, 1)
                slowest[stage] = max(slowest.get(stage, 0.0), wait)
    return slowest


def upload_steadily(store: S3ObjectStore, bucket: str, objects: dict[str, bytes], third: threading.Event) -> None:
    """Uploads one object every 0.3 s; sets ``third`` once a third of them went up."""
    for n, (key, data) in enumerate(objects.items()):
        upload(store, bucket, {key: data})
        if n + 1 >= len(objects) // 3:
            third.set()
        time.sleep(0.3)


@pytest.mark.slow
def test_a_broker_killed_under_upload_load_loses_nothing(
    infra: Endpoints, clip_dir: Path, tmp_path: Path, unique: str
) -> None:
    from local_stack import kafka_broker
    from local_stack.processes import free_port
    from local_stack.stack import stop_services
    from local_stack.supervisor import Supervisor

    cluster = kafka_broker.start_cluster(tmp_path / "kafka3", 3, ready_timeout_s=240)
    endpoints = Endpoints(cluster.bootstrap_servers, infra.s3_endpoint_url, infra.milvus_uri)
    prefix = f"t{unique}."
    dep = Deployment(
        tmp_path / "state", endpoints, clip_dir, prefix, f"bucket-{unique}", f"queue-{unique}", 2, free_port(),
        index_backend="milvus",  # named: assert_rows reads the rows back from Milvus
    )  # fmt: skip
    figures = Figures("broker-killed")
    supervising = threading.Event()
    try:
        dep.prepare()
        wait_for_transactions(cluster.bootstrap_servers)
        names = ("sqs_bridge", "normalizer", "text_embedder", "vision_embedder", "index_updater")
        services = [dep.service(n, PYTHONFAULTHANDLER="1") for n in names]
        # Supervised as `mmrag stack up` runs them: a process that exits (fenced, or ended by its watchdog on a
        # Kafka call the failover left hung) is restarted, and its new incarnation fences the old one.
        supervisor = Supervisor(dep.state_dir, services)
        threading.Thread(target=supervisor.run, args=(supervising,), name="supervisor", daemon=True).start()
        assert wait_until(lambda: all(s.proc is not None for s in services), 30), "the supervisor started them"
        for service in services:
            service.wait_ready(240)
        victim = busiest_broker(cluster.bootstrap_servers, prefix)
        objects = {f"notes/{n:02d}.md": note(n) for n in range(30)} | {
            f"img/{n:02d}.png": circle_png() for n in range(10)
        }
        third = threading.Event()
        store = S3ObjectStore(dep.s3_settings(), "test")
        uploader = threading.Thread(target=upload_steadily, args=(store, dep.bucket, objects, third))
        uploader.start()
        assert third.wait(60), "uploads under way"
        figures.sample_rss([(f"broker-{n.node_id}", n.pid) for n in cluster.nodes])
        cluster.kill_node(victim)
        killed, killed_ms = time.monotonic(), time.time() * 1000
        uploader.join(120)
        oids = {f"{dep.bucket}/{k}" for k in objects}
        all_in = wait_until(lambda: oids <= indexed(dep), 240, interval_s=2)
        figures.values.update(killed_broker=victim, indexed_after_kill_s=round(time.monotonic() - killed, 1))
        restarts = {w.service.name: [w.restarts, w.last_exit] for w in supervisor.watched if w.restarts}
        found = statuses(dep)
        during = waits_after(found, oids, killed_ms)
        figures.values.update(restarts=restarts, uploaded_after_kill=len(during))
        if during:
            figures.values["after_kill_upload_to_indexed_s"] = {"p50": during[len(during) // 2], "max": during[-1]}
            figures.values["after_kill_slowest_by_stage_s"] = stage_delays(dep, found, killed_ms)
        dlq = dead_letters(dep)
        delivery_figures(figures, dep, oids, dlq)
        figures.sample_rss([(s.name, s.pid) for s in services])
        if not all_in:  # what the probes said about the stalled pipeline, then where each process was
            figures.values["probes_when_stalled"] = {
                s.name: [probe(s, "healthz"), probe(s, "readyz")] for s in services
            }
            dump_stacks(services)

        assert dlq == [], "a broker failover dead-letters nothing"
        assert all_in, f"not indexed after the broker died: {sorted(oids - indexed(dep))}"
        assert_rows(dep, {f"{dep.bucket}/{k}": (1, k.endswith(".png")) for k in objects})
        assert_all_serving(services)
        # A broker loss is an ordinary event for a 3-broker cluster: every stage rides through the leader election
        # (a hung transactional call replaces its producer, no restart), and what was uploaded meanwhile is indexed
        # within seconds of its upload (issue 20's goal: 10 s at p99; 20 objects, so p99 is the slowest).
        assert restarts == {}, f"deployables restarted during the failover: {restarts}"
        assert during and during[-1] <= FAILOVER_WAIT_S, f"upload->indexed after the kill: {during}"
        figures.values["stop_s"] = stop_times(services)
    finally:
        supervising.set()
        figures.print()
        stop_services(dep.state_dir)
        cluster.stop()
