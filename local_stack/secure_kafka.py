"""The local Kafka as a secured cluster: SASL_SSL (SCRAM-SHA-512) for clients, mTLS between controller and broker,
StandardAuthorizer with no access unless an ACL grants it, an admin super user, and one SCRAM user per declared
principal (mmrag.access) holding exactly its ACLs.

Everything secret lives under ``<kafka dir>/security`` (0600): the CA, the node's key, one password file per user."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from local_stack.certs import LocalCa, write_private
from mmrag.access import ADMIN, Principal, principals

# A client's identity in the environment: the password as a file path only, so `mmrag stack env` prints no secret.
SECURITY_KEYS = (
    "MMRAG_KAFKA_SECURITY_PROTOCOL",
    "MMRAG_KAFKA_SASL_MECHANISM",
    "MMRAG_KAFKA_SASL_USERNAME",
    "MMRAG_KAFKA_SASL_PASSWORD_FILE",
    "MMRAG_KAFKA_SSL_CA_LOCATION",
)
GRPC_CA_KEY = "MMRAG_GRPC_CA"  # what the gRPC clients of a secured stack trust (its CA)
MECHANISM = "SCRAM-SHA-512"
NODE_CN = "kafka-node"  # the nodes' certificate: the controller link's principal User:CN=kafka-node
SCRAM_ITERATIONS = 4096
# The controller listener takes TLS client certificates only (no SASL: SCRAM users live in the metadata it serves).
LISTENERS = """listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=SASL_SSL://127.0.0.1:{port}
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms={mechanism}
sasl.mechanism.inter.broker.protocol={mechanism}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \
required username="{admin}" password="{admin_password}";
listener.name.controller.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:{admin};User:CN={node_cn}
"""


@dataclass(frozen=True)
class SecurityFiles:
    """The secured cluster's files under ``dir``: CA, node keystore, ``users/<name>.password``."""

    dir: Path

    @property
    def ca(self) -> LocalCa:
        return LocalCa(self.dir)

    @property
    def keystore(self) -> Path:
        return self.dir / "node-keystore.pem"

    def password_file(self, user: str) -> Path:
        return self.dir / "users" / f"{user}.password"

    def password(self, user: str) -> str:
        """The SCRAM password of ``user``; FileNotFoundError naming the fix when the stack never made it."""
        path = self.password_file(user)
        if not path.exists():
            raise FileNotFoundError(f"[secure stack] no password for {user} at {path} -> `mmrag stack up --secure`")
        return path.read_text().strip()

    def ensure(self, users: list[str]) -> SecurityFiles:
        """CA, node keystore (key + certificate chain, one PEM file as Kafka reads it) and a random password per
        user; what exists is kept (clients keep trusting the CA, users keep their passwords)."""
        self.ca.ensure()
        if not self.keystore.exists():
            cert, key = self.ca.issue(NODE_CN)
            write_private(self.keystore, key + cert + self.ca.cert_path.read_bytes())
        for user in [ADMIN, *users]:
            if not self.password_file(user).exists():
                write_private(self.password_file(user), secrets.token_urlsafe(24).encode())
        return self

    def grpc_server_env(self) -> dict[str, str]:
        """The query service's gRPC TLS settings: a certificate of the stack's CA for loopback (made once)."""
        cert, key = self.dir / "grpc-server.pem", self.dir / "grpc-server.key"
        if not (cert.exists() and key.exists()):
            self.ca.issue_files("query-service", self.dir / "grpc-server")
        return {"MMRAG_GRPC_TLS_CERT": str(cert), "MMRAG_GRPC_TLS_KEY": str(key)}

    def listener_properties(self, port: int, controller_port: int) -> str:
        return LISTENERS.format(
            port=port,
            controller_port=controller_port,
            mechanism=MECHANISM,
            admin=ADMIN,
            admin_password=self.password(ADMIN),
            keystore=self.keystore,
            ca=self.ca.cert_path,
            node_cn=NODE_CN,
        )

    def format_args(self) -> list[str]:
        """The storage tool's arguments that put the admin's SCRAM credential into the first metadata (KIP-900)."""
        return ["--add-scram", f"{MECHANISM}=[name={ADMIN},password={self.password(ADMIN)}]"]

    def client_config(self, user: str = ADMIN) -> dict[str, Any]:
        """librdkafka settings of ``user`` (the admin unless named)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": user,
            "sasl.password": self.password(user),
            "ssl.ca.location": str(self.ca.cert_path),
        }

    def client_env(self, user: str = ADMIN) -> dict[str, str]:
        """The MMRAG_KAFKA_* settings of ``user``: the password as a file path, never its value."""
        values = ("SASL_SSL", MECHANISM, user, str(self.password_file(user)), str(self.ca.cert_path))
        return dict(zip(SECURITY_KEYS, values, strict=True))


def security_dir(env: dict[str, str]) -> str:
    """The secured stack's security dir its clients' settings ``env`` point into ('' for a plaintext stack)."""
    ca = env.get("MMRAG_KAFKA_SSL_CA_LOCATION", "")
    return str(Path(ca).parent) if ca and env.get("MMRAG_KAFKA_SECURITY_PROTOCOL") == "SASL_SSL" else ""


def ensure_users(admin: AdminClient, files: SecurityFiles, users: list[str]) -> None:
    """Creates or updates each user's SCRAM credential from its password file (the Admin API, as on any cluster)."""
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(u, info, files.password(u).encode()) for u in users
    ]
    for user, future in admin.alter_user_scram_credentials(upserts).items():
        try:
            future.result()
        except KafkaException as exc:
            raise RuntimeError(
                f"[secure stack] SCRAM user {user}: not created ({exc}) -> check the broker log"
            ) from exc


def _binding(user: str, kind: ResourceType, name: str, pattern: ResourcePatternType, op: AclOperation) -> AclBinding:
    return AclBinding(kind, name, pattern, f"User:{user}", "*", op, AclPermissionType.ALLOW)


def acl_bindings(p: Principal) -> list[AclBinding]:
    """Exactly what ``p`` declares: READ on topics read, WRITE on topics written, READ on its groups (names and
    prefixes), DESCRIBE on groups it looks at, WRITE on its transactional ids. Idempotent producing needs no more
    than WRITE on a topic (Kafka 3+)."""
    topic, group, txn = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    read, write, describe = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE
    found = [_binding(p.name, topic, t, literal, read) for t in sorted(p.reads)]
    found += [_binding(p.name, topic, t, literal, write) for t in sorted(p.writes)]
    found += [_binding(p.name, group, g, literal, read) for g in sorted(p.groups)]
    found += [_binding(p.name, group, g, prefixed, read) for g in sorted(p.group_prefixes)]
    found += [_binding(p.name, group, g, prefixed, describe) for g in sorted(p.groups_described)]
    if p.transactional_id_prefix is not None:
        found.append(_binding(p.name, txn, p.transactional_id_prefix, prefixed, write))
    return found


def apply_acls(admin: AdminClient, principals: tuple[Principal, ...], timeout_s: float = 30) -> int:
    """Creates every principal's ACLs (creating an existing one is a no-op) and waits until the broker enforces
    them (it applies the controller's metadata a moment after create_acls returns); returns how many bindings."""
    bindings = [b for p in principals for b in acl_bindings(p)]
    for binding, future in admin.create_acls(bindings, request_timeout=timeout_s).items():
        try:
            future.result()
        except KafkaException as exc:
            raise RuntimeError(f"[secure stack] ACL {binding}: not created ({exc}) -> check the broker log") from exc
    wanted = {_key(b) for b in bindings}
    deadline = time.monotonic() + timeout_s
    while wanted - _enforced(admin):
        if time.monotonic() > deadline:
            raise RuntimeError(f"[secure stack] {len(wanted)} ACLs created but not enforced in {timeout_s:.0f}s")
        time.sleep(0.1)
    return len(bindings)


def _key(binding: AclBinding) -> tuple[object, ...]:
    return (binding.restype, binding.name, binding.resource_pattern_type, binding.principal, binding.operation)


def _enforced(admin: AdminClient) -> set[tuple[object, ...]]:
    """Every ACL the broker's authorizer holds now (DescribeAcls is answered from it)."""
    anything: Any = None  # a filter's None matches any name, principal and host (the stubs say str)
    match_all = AclBindingFilter(
        ResourceType.ANY, anything, ResourcePatternType.ANY, anything, anything, AclOperation.ANY, AclPermissionType.ANY
    )
    return {_key(b) for b in admin.describe_acls(match_all, request_timeout=10).result()}


def space_identities(
    env: Mapping[str, str], topic_prefix: str, space: str, stages: list[str]
) -> dict[str, dict[str, str]]:
    """On a secured local stack (``env`` trusts a CA in its security dir): applies the re-index ``space``'s ACLs as
    the admin and returns each of ``stages``' own identity (their space's topics and groups are granted now);
    {} on a plaintext one."""
    directory = security_dir(dict(env))
    if not directory:
        return {}
    files = SecurityFiles(Path(directory))
    admin = AdminClient({"bootstrap.servers": env["MMRAG_BOOTSTRAP_SERVERS"], **files.client_config()})
    apply_acls(admin, principals(topic_prefix, space))
    return {stage: files.client_env(stage) for stage in stages}
