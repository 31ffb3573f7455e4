"""Topics take the cluster's replication: RF = min(3, brokers), min.insync.replicas = RF-1 (1 at RF 1), as the cluster
reports its brokers; `mmrag topics --replication N` overrides it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from mmrag.topics import SPECS, Topics, ensure_topics, min_insync_for, replication_for


@pytest.mark.unit
@pytest.mark.parametrize(("brokers", "replication", "min_insync"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_replication_rule(brokers: int, replication: int, min_insync: int) -> None:
    assert replication_for(brokers) == replication
    assert min_insync_for(replication_for(brokers)) == min_insync


@pytest.mark.unit
def test_no_broker_is_an_error_naming_the_fix() -> None:
    with pytest.raises(ValueError, match="0 brokers.*broker up"):
        replication_for(0)


def replication_of(bootstrap: str, topics: Topics) -> dict[str, tuple[frozenset[int], str]]:
    """Per topic: the replica counts of its partitions and its min.insync.replicas."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=15).topics
    names = [topics.name(spec.base) for spec in SPECS]
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    configs = {r.name: f.result()["min.insync.replicas"].value for r, f in admin.describe_configs(resources).items()}
    return {n: (frozenset(len(p.replicas) for p in metadata[n].partitions.values()), configs[n]) for n in names}


def run_topics_cli(bootstrap: str, prefix: str, *args: str) -> str:
    env = {"MMRAG_BOOTSTRAP_SERVERS": bootstrap, "MMRAG_TOPIC_PREFIX": prefix, "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "operator_cli", "topics", *args]
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.kafka
def test_single_broker_topics_have_replication_one(bootstrap: str, unique: str) -> None:
    topics = Topics(f"rf{unique}.")
    assert len(ensure_topics(bootstrap, topics)) == len(SPECS)
    assert set(replication_of(bootstrap, topics).values()) == {(frozenset({1}), "1")}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_three_brokers_give_replication_three_and_the_flag_overrides(tmp_path: Path) -> None:
    from local_stack.kafka_broker import start_cluster, stop_cluster

    cluster = start_cluster(tmp_path / "kafka3", nodes=3, ready_timeout_s=120)
    try:
        servers = cluster.bootstrap_servers
        out = run_topics_cli(servers, "cli3.")
        assert "cli3.objects.v1" in out
        assert set(replication_of(servers, Topics("cli3.")).values()) == {(frozenset({3}), "2")}
        run_topics_cli(servers, "cli1.", "--replication", "1")
        assert set(replication_of(servers, Topics("cli1.")).values()) == {(frozenset({1}), "1")}
        ensure_topics(servers, Topics("lib."), replication=2)
        assert set(replication_of(servers, Topics("lib.")).values()) == {(frozenset({2}), "1")}
    finally:
        stop_cluster(tmp_path / "kafka3")
