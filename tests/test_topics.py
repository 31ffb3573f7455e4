"""Topics of docs/architecture.md are created idempotently with their configs on the real broker."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from mmrag.topics import MAX_MESSAGE_BYTES, SPECS, Topics, ensure_topics

pytestmark = pytest.mark.kafka


def test_topics_are_created_once_with_compaction_and_shard_partitions(bootstrap: str, unique: str) -> None:
    topics = Topics(f"topics{unique}.")
    created = ensure_topics(bootstrap, topics, vector_shards=4)
    assert sorted(created) == sorted(topics.name(spec.base) for spec in SPECS)
    assert ensure_topics(bootstrap, topics, vector_shards=4) == []  # idempotent

    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=10).topics
    assert len(metadata[topics.vectors].partitions) == 4
    assert len(metadata[topics.objects].partitions) == 3
    assert len(metadata[topics.objects_heavy].partitions) == 3  # the text embedder's heavy lane, keyed by object
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topics.name(spec.base)) for spec in SPECS]
    for resource, future in admin.describe_configs(resources).items():
        config = future.result()
        policy = config["cleanup.policy"].value
        assert int(config["max.message.bytes"].value) == MAX_MESSAGE_BYTES, "records up to the producers' limit fit"
        compacted = resource.name in {
            topics.objects,
            topics.vectors,
            topics.index_status,
            topics.name("backfill-checkpoints"),
            topics.object_access,
        }
        if resource.name in (topics.llm_heartbeats, topics.vectors_applied):  # seconds of it are read: compacted
            # and deleted after 10 min
            assert policy == "compact,delete" and config["retention.ms"].value == "600000", config
            continue
        assert policy == ("compact" if compacted else "delete"), resource.name
