"""The secured local Kafka (SASL_SSL, SCRAM-SHA-512, StandardAuthorizer, ACLs from mmrag.access) refuses what no
declaration grants, and a deployable refused by it stops with one line naming the principal, the broker and the
fix: no traceback, no retries, no dead letter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from local_stack.certs import LocalCa
from mmrag.kafka_clients import consumer_config, watermark_offsets
from mmrag.kafka_security import EXIT_CONFIG, KafkaAccessError, KafkaSecuritySettings, check_kafka_access
from mmrag.topics import Topics
from tests.kafka_tools import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.secure]


def as_principal(endpoints: Any, user: str, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": endpoints.bootstrap_servers, **endpoints.security.client_config(user), **extra}


def settings_of(endpoints: Any, user: str, password: str, ca: Path) -> KafkaSecuritySettings:
    return KafkaSecuritySettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username=user,
        kafka_sasl_password=password,  # type: ignore[arg-type]
        kafka_ssl_ca_location=ca,
    )


def dead_letters_written(bootstrap: str, prefix: str) -> int:
    """How many records the deployment's DLQ (one partition) ever received, asked of the broker as the admin."""
    consumer = Consumer(consumer_config(bootstrap, "dlq-count"))
    try:
        return watermark_offsets(consumer, TopicPartition(Topics(prefix).dlq, 0), 15)[1]
    finally:
        consumer.close()


def subscribe_refusal(endpoints: Any, user: str, group: str, topic: str, timeout_s: float = 30) -> KafkaError:
    """The first error ``user``'s consumer in ``group`` reports on ``topic`` (a refusal is an error event of poll)."""
    consumer = Consumer(as_principal(endpoints, user, **{"group.id": group, "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    try:
        return first_consumer_error(consumer, timeout_s)
    finally:
        consumer.close()


def first_consumer_error(consumer: Consumer, timeout_s: float) -> KafkaError:
    found: list[KafkaError] = []

    def polled() -> bool:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is not None:
            found.append(msg.error())
        return bool(found)

    wait_for(polled, timeout_s, "a consumer error")
    return found[0]


def test_plaintext_client_is_refused(secure_infra: Any) -> None:
    bootstrap = secure_infra.bootstrap_servers
    errors: list[KafkaError] = []
    plain = AdminClient({"bootstrap.servers": bootstrap, "error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=5)
    plain.poll(0)
    assert errors and all(e.code() in {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN} for e in errors), errors
    assert AdminClient(as_principal(secure_infra, "admin")).list_topics(timeout=15).brokers, "the admin gets in"


def test_wrong_password_and_untrusted_ca_are_access_errors(secure_infra: Any, tmp_path: Path) -> None:
    bootstrap, security = secure_infra.bootstrap_servers, secure_infra.security
    ca, password = security.ca.cert_path, security.password("normalizer")
    check_kafka_access(settings_of(secure_infra, "normalizer", password, ca), bootstrap)  # the right ones pass
    with pytest.raises(KafkaAccessError) as wrong:
        check_kafka_access(settings_of(secure_infra, "normalizer", "not-" + password, ca), bootstrap)
    assert f"User:normalizer refused by {bootstrap}" in str(wrong.value)
    assert "-> check MMRAG_KAFKA_SASL_USERNAME and MMRAG_KAFKA_SASL_PASSWORD" in str(wrong.value)
    assert password not in str(wrong.value)
    other_ca = LocalCa(tmp_path / "other-ca").ensure().cert_path
    with pytest.raises(KafkaAccessError) as untrusted:
        check_kafka_access(settings_of(secure_infra, "normalizer", password, other_ca), bootstrap)
    assert untrusted.value.code == KafkaError._SSL and "MMRAG_KAFKA_SSL_CA_LOCATION" in str(untrusted.value)


def test_text_embedder_principal_is_refused_topics_and_groups_it_does_not_declare(secure_deployment: Any) -> None:
    topics = Topics(secure_deployment.topic_prefix)
    endpoints = secure_deployment.endpoints
    reports: dict[str, KafkaError | None] = {}
    producer = Producer(as_principal(endpoints, "text_embedder"))
    for topic in (topics.index_status, topics.embeddings):
        producer.produce(topic, b"x", on_delivery=lambda err, msg: reports.__setitem__(msg.topic(), err))
    assert producer.flush(30) == 0
    assert reports[topics.embeddings] is None, "what it declares it may write"
    refused = reports[topics.index_status]
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    prefix = secure_deployment.topic_prefix
    refusal = subscribe_refusal(endpoints, "text_embedder", f"{prefix}embedder-text", topics.llm_requests)
    assert refusal.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # a topic it may read, in another deployable's group
    refusal = subscribe_refusal(endpoints, "text_embedder", f"{prefix}index-updater", topics.objects)
    assert refusal.code() == KafkaError.GROUP_AUTHORIZATION_FAILED


def stopped_with_one_line(service: Any, principal: str, bootstrap: str) -> str:
    """Waits for ``service`` to exit; asserts the configuration exit code and one refusal line, no traceback."""
    wait_for(lambda: not service.alive(), 90, f"{service.name} to stop")
    log = service.log_path.read_text()
    refusals = [line for line in log.splitlines() if "refused by" in line]
    assert service.proc.returncode == EXIT_CONFIG, log[-2000:]
    assert len(refusals) == 1 and f"User:{principal} refused by {bootstrap}" in refusals[0], refusals
    assert "Traceback" not in log
    return refusals[0]


def test_deployable_with_a_wrong_password_stops_with_one_line(secure_deployment: Any, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-normalizers-password\n")
    bootstrap = secure_deployment.endpoints.bootstrap_servers
    service = secure_deployment.service("normalizer", MMRAG_KAFKA_SASL_PASSWORD_FILE=str(wrong)).start()
    line = stopped_with_one_line(service, "normalizer", bootstrap)
    assert "MMRAG_KAFKA_SASL_PASSWORD" in line
    assert "not-the-normalizers-password" not in service.log_path.read_text()
    assert dead_letters_written(bootstrap, secure_deployment.topic_prefix) == 0


def test_deployable_run_as_another_principal_stops_with_one_line(secure_deployment: Any) -> None:
    """The normalizer's code with the text embedder's identity: its group and transactional id are not granted."""
    bootstrap = secure_deployment.endpoints.bootstrap_servers
    identity = secure_deployment.endpoints.security.client_env("text_embedder")
    service = secure_deployment.service("normalizer", **identity).start()
    line = stopped_with_one_line(service, "text_embedder", bootstrap)
    assert "AUTHORIZATION_FAILED" in line and "mmrag/access.py" in line
    assert dead_letters_written(bootstrap, secure_deployment.topic_prefix) == 0


def test_stack_status_explains_a_refused_deployable() -> None:
    from local_stack.stack_status import crash_hint

    assert "refused by" in crash_hint("normalizer", f"exit code {EXIT_CONFIG}")
    assert crash_hint("normalizer", "exit code 1") == ""
