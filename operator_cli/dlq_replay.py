"""Replaying dead letters to their source topic, once each.

A replay sends the failed input back where it was consumed from (``dlq-source-topic``, same partition), with its
own headers plus REPLAY_* headers (which dead letter, its attempts and first failure: a replay that fails again is
dead-lettered with attempts carried on). Each replayed dead letter is marked on ``<prefix>dlq-replays.v1``
(compacted, key ``partition:offset``) in the same Kafka transaction as the replayed record, so a dead letter is
replayed once: a second run skips it, and a replay that failed again is replayed only when selected by offset.
Not replayed: inputs from outside Kafka (SQS, webhook), and inputs of a version that is no longer the object's
current one (a re-upload under the same key already carries the fix; replaying the old bytes would be wrong).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import NewTopic

from mmrag.dlq import REPLAY_FIRST_FAILURE_MS, REPLAY_OF, REPLAY_PRIOR_ATTEMPTS
from mmrag.kafka_clients import encode_headers, key_partition, producer_config
from mmrag.messages import now_ms
from operator_cli.connection import CommandError, OperatorSettings, format_ms
from operator_cli.dead_letters import DeadLetter, read_records

MARKER_BASE = "dlq-replays"


@dataclass(frozen=True)
class Verdict:
    dead_letter: DeadLetter
    replay: bool
    reason: str


def marker_topic(settings: OperatorSettings) -> str:
    return settings.topics.name(MARKER_BASE)


def replayed_refs(settings: OperatorSettings) -> dict[str, dict[str, object]]:
    """Dead letters replayed so far (``partition:offset`` -> marker), empty before the first replay."""
    topic = marker_topic(settings)
    if topic not in settings.admin().list_topics(timeout=15).topics:
        return {}
    return {
        r.key: json.loads(r.value)
        for r in read_records(settings.bootstrap_servers, topic)
        if r.key is not None and r.value is not None
    }


def judge(settings: OperatorSettings, dead_letters: list[DeadLetter], explicit: bool, again: bool) -> list[Verdict]:
    """What a replay of ``dead_letters`` would do with each; ``explicit`` = chosen by offset range."""
    done = replayed_refs(settings)
    topics = settings.project_topics()
    current = current_versions(settings, [d for d in dead_letters if d.source_topic == settings.topics.objects])
    verdicts = []
    for d in dead_letters:
        reason = ""
        if d.ref in done and not again:
            reason = f"replayed already ({format_ms(_int(done[d.ref].get('at')))}); --again sends it once more"
        elif d.replay_of and not (explicit or again):
            reason = f"a replay of {d.replay_of} that failed again; select it by --offsets to replay it once more"
        elif d.source_topic not in topics:
            reason = f"source {d.source_topic or '?'} is outside this deployment's Kafka topics; resend from there"
        elif d.record.key in current and d.version is not None and current[d.record.key] != d.version:
            now = current[d.record.key] or "deleted"
            reason = f"superseded: the object is at version {now} now, processed on its own"
        verdicts.append(Verdict(d, not reason, reason or "replay"))
    return verdicts


def current_versions(settings: OperatorSettings, dead_letters: list[DeadLetter]) -> dict[str, str]:
    """The current version on objects.v1 of each dead letter's object ('' = deleted), reading only the partitions
    that hold those keys."""
    keys = {d.record.key for d in dead_letters if d.record.key is not None}
    if not keys:
        return {}
    topic = settings.topics.objects
    count = len(settings.admin().list_topics(topic, timeout=15).topics[topic].partitions)
    partitions = sorted({key_partition(k, count) for k in keys})
    found: dict[str, str] = {}
    for record in read_records(settings.bootstrap_servers, topic, partitions):
        if record.key in keys:
            found[record.key] = record.headers.get("version", "") if record.value is not None else ""
    return found


def replay(settings: OperatorSettings, verdicts: list[Verdict]) -> int:
    """Sends the ones to replay and their markers in one transaction; returns how many were sent."""
    chosen = [v.dead_letter for v in verdicts if v.replay]
    if not chosen:
        return 0
    _ensure_marker_topic(settings)
    txn_id = f"mmrag-dlq-replay.{settings.topic_prefix or 'default'}"  # one replay at a time per deployment
    producer = Producer(producer_config(settings.bootstrap_servers, txn_id))
    try:
        producer.init_transactions(30)
        producer.begin_transaction()
        for d in chosen:
            _produce_replay(producer, d)
            marker = {"at": now_ms(), "to": d.source_topic, "stage": d.stage}
            producer.produce(marker_topic(settings), key=d.ref, value=json.dumps(marker).encode())
        producer.commit_transaction(60)
    except KafkaException as exc:
        raise CommandError(f"replay not committed, nothing was sent ({exc.args[0]}) -> run it again") from exc
    return len(chosen)


def _produce_replay(producer: Producer, d: DeadLetter) -> None:
    headers = d.original_headers()
    headers[REPLAY_OF] = d.ref
    headers[REPLAY_PRIOR_ATTEMPTS] = str(d.attempts)
    headers[REPLAY_FIRST_FAILURE_MS] = str(d.first_failure_ms)
    key = d.record.key.encode() if d.record.key is not None else None
    sent: list[tuple[str, str | bytes | None]] = list(encode_headers(headers))
    if d.source_partition is None:
        producer.produce(d.source_topic, key=key, value=d.record.value, headers=sent)
    else:
        producer.produce(d.source_topic, key=key, value=d.record.value, partition=d.source_partition, headers=sent)


def _ensure_marker_topic(settings: OperatorSettings) -> None:
    topic = marker_topic(settings)
    admin = settings.admin()
    if topic in admin.list_topics(timeout=15).topics:
        return
    config = {"cleanup.policy": "compact"}
    try:
        admin.create_topics([NewTopic(topic, 1, replication_factor=-1, config=config)])[topic].result(timeout=30)
    except KafkaException as exc:
        if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
            raise


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
