"""TLS for the project's plain HTTP servers (the probe/metrics server of every deployable, the webhook source): a
server certificate and key from files, set per deployable; off when neither is set. A client that does not speak
TLS to such a port gets no answer (its handshake fails and the server drops it)."""

from __future__ import annotations

import ssl
from pathlib import Path
from socketserver import BaseServer


def check_pair(cert: Path | None, key: Path | None, what: str) -> None:
    """Both or neither: one alone is a configuration error naming the two settings."""
    if (cert is None) != (key is None):
        raise ValueError(f"{what}: set both the certificate and the key file for TLS, or neither (plain HTTP)")


def serve_tls(server: BaseServer, cert: Path | None, key: Path | None) -> str:
    """Wraps ``server``'s listening socket in TLS when ``cert`` and ``key`` are given; returns the URL scheme."""
    if cert is None or key is None:
        return "http"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)  # type: ignore[attr-defined]
    return "https"
