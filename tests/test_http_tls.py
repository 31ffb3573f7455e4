"""TLS on the plain HTTP ports, by setting: the probe/metrics server every deployable runs and the webhook source.
A client trusting the stack's CA gets answers over https; one speaking plain HTTP to the port gets none; a
certificate without its key is a configuration error naming both settings."""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr

from local_stack.certs import LocalCa
from mmrag.telemetry import Probes
from producers.webhook import WebhookSettings, WebhookSource

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    ca = LocalCa(tmp_path_factory.mktemp("ca")).ensure()
    cert, key = ca.issue_files("probes", tmp_path_factory.mktemp("leaf") / "probes")
    return ca.cert_path, cert, key


def https_get(port: int, path: str, ca: Path, method: str = "GET") -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    conn.request(method, path)
    reply = conn.getresponse()
    return reply.status, reply.read().decode()


def plain_get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    return conn.getresponse().status


def test_probes_over_tls_answer_https_and_refuse_plain_http(tls_files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls_files
    probes = Probes("normalizer")
    probes.set_ready(True)
    port = probes.serve("127.0.0.1", 0, cert, key)
    try:
        status, body = https_get(port, "/readyz", ca)
        assert (status, body.splitlines()[0]) == (200, "normalizer: ok")
        status, body = https_get(port, "/metrics", ca)
        assert status == 200 and "mmrag_ready" in body
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            plain_get(port, "/healthz")
    finally:
        probes.close()


def test_a_certificate_without_its_key_is_refused_naming_both_settings(tls_files: tuple[Path, Path, Path]) -> None:
    _, cert, _ = tls_files
    with pytest.raises(ValueError, match="MMRAG_PROBE_TLS_CERT / MMRAG_PROBE_TLS_KEY"):
        Probes("normalizer").serve("127.0.0.1", 0, cert, None)


def test_webhook_over_tls(tls_files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls_files
    settings = WebhookSettings(
        webhook_port=0, webhook_token=SecretStr("s3cret"), webhook_tls_cert=cert, webhook_tls_key=key
    )
    source = WebhookSource(settings)
    source.start()
    try:
        status, _ = https_get(source.port, "/", ca, method="POST")
        assert status == 401  # answered over TLS: no bearer token
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            plain_get(source.port, "/")
    finally:
        source.close()
