"""Kafka client security settings: librdkafka's names under MMRAG_, secrets from *_FILE, never printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mmrag.kafka_security import KafkaSecuritySettings, kafka_security
from mmrag.settings import BaseServiceSettings, S3Settings

pytestmark = pytest.mark.unit


def test_plaintext_adds_nothing_to_a_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMRAG_KAFKA_SECURITY_PROTOCOL", raising=False)
    assert kafka_security("127.0.0.1:9092") == {}


def test_sasl_ssl_settings_map_to_librdkafka_and_the_file_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-the-file\n")
    for key, value in {
        "MMRAG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "MMRAG_KAFKA_SASL_USERNAME": "normalizer",
        "MMRAG_KAFKA_SASL_PASSWORD": "from-the-env",
        "MMRAG_KAFKA_SASL_PASSWORD_FILE": str(secret),
        "MMRAG_KAFKA_SSL_CA_LOCATION": "/etc/mmrag/ca.pem",
    }.items():
        monkeypatch.setenv(key, value)
    config = KafkaSecuritySettings().kafka_client_config()
    assert config == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "normalizer",
        "sasl.password": "from-the-file",
        "ssl.ca.location": "/etc/mmrag/ca.pem",
    }
    assert callable(kafka_security("b:9093")["error_cb"]), "refusals become KafkaAccessError"
    printed = BaseServiceSettings().printable()
    assert "from-the-file" not in printed and "from-the-env" not in printed
    assert '"kafka_sasl_password": "***"' in printed and '"kafka_sasl_username": "normalizer"' in printed


def test_every_secret_setting_reads_its_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "key").write_text("AKIAFILE")
    monkeypatch.setenv("MMRAG_S3_ACCESS_KEY_ID_FILE", str(tmp_path / "key"))
    assert S3Settings().s3_access_key_id.get_secret_value() == "AKIAFILE"
    monkeypatch.setenv("MMRAG_S3_ACCESS_KEY_ID_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="MMRAG_S3_ACCESS_KEY_ID_FILE=.*missing: unreadable"):
        S3Settings()
