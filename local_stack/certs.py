"""The local stack's certificate authority: a CA and leaf certificates for loopback, made with `cryptography`.

Files are written 0600 (keys and certificates alike) under the stack's state dir; a CA already there is reused, so
clients that trust it keep working across restarts. Leaf certificates carry serverAuth and clientAuth, so one
certificate serves a listener and authenticates its holder as a client (the KRaft controller link)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 825
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def write_private(path: Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` readable by its owner only (0600, created so: never world-readable a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)
    return path


def _name(common_name: str) -> x509.Name:
    # the common name alone: Kafka's principal of a client certificate is its subject, "CN=<name>"
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alt_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8: the form Kafka's PEM key stores read (it refuses the traditional "EC PRIVATE KEY" form)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


@dataclass(frozen=True)
class LocalCa:
    """A CA under ``dir``: ``ca.pem`` (its certificate, what clients trust) and ``ca.key``."""

    dir: Path

    @property
    def cert_path(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def key_path(self) -> Path:
        return self.dir / "ca.key"

    def ensure(self) -> LocalCa:
        """Makes the CA unless one is there already (its clients keep trusting it)."""
        if self.cert_path.exists() and self.key_path.exists():
            return self
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder("kafka-mmrag local CA", _name("kafka-mmrag local CA"), key.public_key(), VALID_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        write_private(self.key_path, _pem_key(key))
        write_private(self.cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return self

    def issue(self, common_name: str, hosts: tuple[str, ...] = LOOPBACK, days: int = VALID_DAYS) -> tuple[bytes, bytes]:
        """(certificate PEM, PKCS#8 key PEM) of a leaf for ``hosts``, valid ``days`` (negative: already expired)."""
        ca_key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        start = _builder(common_name, ca_cert.subject, key.public_key(), days)
        if days < 0:  # an expired certificate (for refusal tests): valid a day, ended |days| ago
            now = datetime.datetime.now(datetime.UTC)
            start = start.not_valid_before(now - datetime.timedelta(days=1 - days)).not_valid_after(
                now + datetime.timedelta(days=days)
            )
        cert = (
            start.add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    def issue_files(self, common_name: str, stem: Path, days: int = VALID_DAYS) -> tuple[Path, Path]:
        """Writes ``<stem>.pem`` (certificate then CA) and ``<stem>.key`` (0600); returns both paths."""
        cert, key = self.issue(common_name, days=days)
        chain = cert + self.cert_path.read_bytes()
        return write_private(stem.with_suffix(".pem"), chain), write_private(stem.with_suffix(".key"), key)
