"""How every Kafka client of the system authenticates: MMRAG_KAFKA_SECURITY_PROTOCOL, _SASL_MECHANISM,
_SASL_USERNAME, _SASL_PASSWORD (or _SASL_PASSWORD_FILE), _SSL_CA_LOCATION and, for mutual TLS, _SSL_CERTIFICATE_
LOCATION and _SSL_KEY_LOCATION: librdkafka's own names under the project's prefix. PLAINTEXT (the default) adds
nothing to a client's config.

A secret setting ``x`` (a SecretStr) is also read from the file ``MMRAG_X_FILE`` names (a mounted Kubernetes
secret), which wins over ``MMRAG_X``; its value is never printed (SecretStr)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "MMRAG_"


class SecretFiles(BaseSettings):
    """Reads each SecretStr setting from ``<PREFIX><NAME>_FILE`` when that is set (trailing newline stripped)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, info in cls.model_fields.items():
            path = os.environ.get(f"{PREFIX}{name.upper()}_FILE")
            if info.annotation is SecretStr and path:
                try:
                    data[name] = Path(path).read_text().rstrip("\n")
                except OSError as exc:
                    raise ValueError(
                        f"{PREFIX}{name.upper()}_FILE={path}: unreadable ({exc.strerror}) -> mount the secret there"
                    ) from exc
        return data


class KafkaSecuritySettings(SecretFiles):
    """The Kafka client's transport security and identity (see the module docstring)."""

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="librdkafka security.protocol: SASL_SSL on a secured cluster"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism (SASL_* protocols)"
    )
    kafka_sasl_username: str = Field(default="", description="SASL user: this deployable's principal")
    kafka_sasl_password: SecretStr = Field(
        default=SecretStr(""), description="SASL password (or a file: MMRAG_KAFKA_SASL_PASSWORD_FILE)"
    )
    kafka_ssl_ca_location: Path | None = Field(
        default=None, description="CA certificate (PEM) the broker's certificate must chain to; unset = system CAs"
    )
    kafka_ssl_certificate_location: Path | None = Field(
        default=None, description="client certificate (PEM) for mutual TLS, if the listener asks for one"
    )
    kafka_ssl_key_location: Path | None = Field(default=None, description="the client certificate's key (PEM)")

    @property
    def kafka_principal(self) -> str:
        """Who this client is on the broker, for error messages: the SASL user, else 'ANONYMOUS' (plaintext)."""
        if self.kafka_security_protocol.startswith("SASL"):
            return f"User:{self.kafka_sasl_username or '?'}"
        return "ANONYMOUS" if self.kafka_security_protocol == "PLAINTEXT" else "User:<certificate subject>"

    def kafka_client_config(self) -> dict[str, Any]:
        """The librdkafka settings for this identity ({} for PLAINTEXT)."""
        config: dict[str, Any] = {}
        if self.kafka_security_protocol != "PLAINTEXT":
            config["security.protocol"] = self.kafka_security_protocol
        if self.kafka_security_protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        paths = {
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
        }
        config.update({key: str(path) for key, path in paths.items() if path is not None})
        return config


# What each refusal means and what fixes it. These are deployment errors, not outages: retrying cannot help.
_AUTHENTICATION = "check MMRAG_KAFKA_SASL_USERNAME and MMRAG_KAFKA_SASL_PASSWORD(_FILE) against the broker's user"
_TLS = (
    "MMRAG_KAFKA_SSL_CA_LOCATION must name the CA that signed the broker's certificate, and that certificate must "
    "be valid now and name the host in MMRAG_BOOTSTRAP_SERVERS"
)
_AUTHORIZATION = (
    "grant it in the principal's declaration (mmrag/access.py) and apply the ACLs again, or run this deployable "
    "as the principal declared for it"
)
DENIALS = {
    KafkaError._AUTHENTICATION: _AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED: _AUTHENTICATION,
    KafkaError.ILLEGAL_SASL_STATE: _AUTHENTICATION,
    KafkaError.UNSUPPORTED_SASL_MECHANISM: "set MMRAG_KAFKA_SASL_MECHANISM to one the listener enables",
    KafkaError._SSL: _TLS,
    KafkaError.TOPIC_AUTHORIZATION_FAILED: _AUTHORIZATION,
    KafkaError.GROUP_AUTHORIZATION_FAILED: _AUTHORIZATION,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: _AUTHORIZATION,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: _AUTHORIZATION,
}
EXIT_CONFIG = 78  # sysexits' EX_CONFIG: the supervisor and Kubernetes see a configuration error, not a crash


class KafkaAccessError(RuntimeError):
    """The broker refused this client (credentials, certificate or ACL): one line naming the principal, the
    broker, the refusal and its fix. The deployable exits with EXIT_CONFIG; nothing goes to the DLQ."""

    def __init__(self, principal: str, bootstrap: str, err: KafkaError) -> None:
        super().__init__(
            f"[kafka] {principal} refused by {bootstrap}: {err.name()} ({err.str()}) -> {DENIALS[err.code()]}"
        )
        self.code = err.code()


def _denied_error(exc: BaseException) -> KafkaError | None:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return err if isinstance(err, KafkaError) and err.code() in DENIALS else None


def raise_if_denied(errors: Iterable[KafkaError | None], bootstrap: str = "", principal: str = "") -> None:
    """Raises KafkaAccessError for the first refusal among ``errors`` (delivery reports, consumer errors);
    ``principal`` and ``bootstrap`` default to this process's settings."""
    for err in errors:
        if err is not None and err.code() in DENIALS:
            who = principal or KafkaSecuritySettings().kafka_principal
            raise KafkaAccessError(who, bootstrap or _bootstrap(), err)


def access_error(exc: BaseException) -> KafkaAccessError | None:
    """``exc`` as the access error it is (a KafkaAccessError, or a KafkaException carrying a refusal); None else."""
    if isinstance(exc, KafkaAccessError):
        return exc
    err = _denied_error(exc)
    return KafkaAccessError(KafkaSecuritySettings().kafka_principal, _bootstrap(), err) if err is not None else None


def _bootstrap() -> str:
    return os.environ.get(f"{PREFIX}BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def _raise_denied(bootstrap: str) -> Any:
    def on_error(err: KafkaError) -> None:
        raise_if_denied([err], bootstrap)

    return on_error


def kafka_security(bootstrap: str = "") -> dict[str, Any]:
    """This process's Kafka security settings (from its environment) as librdkafka config, with an error callback
    that turns a refused login or certificate into KafkaAccessError (raised from the client's poll); {} for
    PLAINTEXT, whose errors are outages only."""
    config = KafkaSecuritySettings().kafka_client_config()
    if config:
        config["error_cb"] = _raise_denied(bootstrap or _bootstrap())
    return config


def check_kafka_access(settings: KafkaSecuritySettings, bootstrap: str, timeout_s: float = 10) -> None:
    """Logs in once (metadata request) and raises KafkaAccessError when the broker refuses the credentials or the
    certificate; a broker that does not answer is an outage and passes (the stage backs off as usual)."""
    config = settings.kafka_client_config()
    if not config:
        return
    refusals: list[KafkaError] = []
    config.update({"bootstrap.servers": bootstrap, "error_cb": refusals.append, "log_level": 2})
    admin = AdminClient(config)
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        refusals.append(exc.args[0])
    admin.poll(0)  # serves the error callbacks queued meanwhile
    raise_if_denied(refusals, bootstrap, settings.kafka_principal)
