"""gRPC over TLS: the query service's server credentials (certificate, key, optionally a CA its clients' certificates
must chain to: mutual TLS) and the client channel every gRPC client of the project opens (the CLI, the demo, the
bench scripts): TLS when MMRAG_GRPC_CA names the CA to trust, plaintext otherwise; every call carries
``authorization: Bearer <token>`` when a token is given (MMRAG_TOKEN, or the file MMRAG_TOKEN_FILE names)."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

CA_ENV = "MMRAG_GRPC_CA"
TOKEN_ENV = "MMRAG_TOKEN"


class GrpcTlsSettings(BaseSettings):
    """The query service's TLS (MMRAG_GRPC_TLS_CERT + MMRAG_GRPC_TLS_KEY turn it on)."""

    model_config = SettingsConfigDict(env_prefix="MMRAG_", frozen=True, extra="ignore")

    grpc_tls_cert: Path | None = Field(default=None, description="server certificate chain (PEM): gRPC over TLS")
    grpc_tls_key: Path | None = Field(default=None, description="the server certificate's private key (PEM)")
    grpc_tls_client_ca: Path | None = Field(
        default=None, description="CA (PEM) client certificates must chain to: mutual TLS; unset = any client"
    )

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials of the server (None: plaintext); ValueError naming the fix when half configured."""
        if self.grpc_tls_cert is None and self.grpc_tls_key is None:
            if self.grpc_tls_client_ca is not None:
                raise ValueError("[query service] MMRAG_GRPC_TLS_CLIENT_CA needs MMRAG_GRPC_TLS_CERT and _KEY too")
            return None
        if self.grpc_tls_cert is None or self.grpc_tls_key is None:
            raise ValueError("[query service] gRPC TLS needs both MMRAG_GRPC_TLS_CERT and MMRAG_GRPC_TLS_KEY")
        pair = [(self.grpc_tls_key.read_bytes(), self.grpc_tls_cert.read_bytes())]
        client_ca = self.grpc_tls_client_ca.read_bytes() if self.grpc_tls_client_ca else None
        return grpc.ssl_server_credentials(pair, client_ca, require_client_auth=client_ca is not None)


def add_port(server: grpc.Server, address: str, settings: GrpcTlsSettings) -> int:
    """Binds ``address`` with TLS when the settings give a certificate, plaintext otherwise; returns the port."""
    credentials = settings.server_credentials()
    if credentials is None:
        return int(server.add_insecure_port(address))
    return int(server.add_secure_port(address, credentials))


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready")),
    grpc.ClientCallDetails,
):
    pass


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call of a channel (plaintext or TLS alike)."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> _CallDetails:
        metadata = [*(details.metadata or ()), self.header]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


def client_token(token: str | None = None) -> str:
    """``token``, else $MMRAG_TOKEN, else the content of the file $MMRAG_TOKEN_FILE names, else '' (none)."""
    if token:
        return token.strip()
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = os.environ.get(f"{TOKEN_ENV}_FILE")
    if not path:
        return ""
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{TOKEN_ENV}_FILE={path}: unreadable ({exc.strerror}) -> point it at the token file") from exc


def query_channel(target: str, ca: Path | None = None, token: str | None = None) -> grpc.Channel:
    """A channel to the query service: TLS trusting ``ca`` (default $MMRAG_GRPC_CA), with the client certificate of
    $MMRAG_GRPC_CLIENT_CERT / _KEY when set (mutual TLS); plaintext when no CA is given. Every call sends the bearer
    ``token`` (default: client_token())."""
    bearer = client_token(token)
    channel = _plain_channel(target, ca)
    return grpc.intercept_channel(channel, BearerToken(bearer)) if bearer else channel


def _plain_channel(target: str, ca: Path | None) -> grpc.Channel:
    ca = ca or (Path(os.environ[CA_ENV]) if os.environ.get(CA_ENV) else None)
    if ca is None:
        return grpc.insecure_channel(target)
    cert, key = os.environ.get("MMRAG_GRPC_CLIENT_CERT"), os.environ.get("MMRAG_GRPC_CLIENT_KEY")
    credentials = grpc.ssl_channel_credentials(
        ca.read_bytes(),
        Path(key).read_bytes() if key else None,
        Path(cert).read_bytes() if cert else None,
    )
    return grpc.secure_channel(target, credentials)
