"""Credentials for tests: a signing key and its JWKS file (what an OIDC provider publishes), tokens minted for any
principal/groups/roles, and API key files as `mmrag auth api-key` writes them. Real keys and real signatures: the
query service verifies them with PyJWT exactly as it verifies a provider's."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from query_service.auth import api_key_hash

ISSUER = "https://issuer.test"
AUDIENCE = "mmrag-test"


@dataclass(frozen=True)
class Issuer:
    """One signing key (``kid``) of an issuer; ``jwks_file`` is its public JWKS."""

    kid: str
    private_key: rsa.RSAPrivateKey
    jwks_file: Path
    issuer: str = ISSUER
    audience: str = AUDIENCE

    def mint_token(
        self,
        principal: str,
        groups: Iterable[str] = (),
        roles: Iterable[str] = ("search", "ask"),
        *,
        expires_in_s: float = 600,
        issuer: str | None = None,
        audience: str | None = None,
        kid: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed RS256 JWT for ``principal``; override issuer/audience/kid/expiry to make a bad one."""
        now = int(time.time())
        claims = {
            "sub": principal,
            "groups": list(groups),
            "roles": list(roles),
            "iss": issuer if issuer is not None else self.issuer,
            "aud": audience if audience is not None else self.audience,
            "iat": now,
            "exp": now + int(expires_in_s),
            **(extra or {}),
        }
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": kid or self.kid})

    def env(self) -> dict[str, str]:
        """The query service settings that trust this issuer (JWTs only)."""
        return {
            "MMRAG_AUTH_MODE": "jwt",
            "MMRAG_AUTH_JWKS_URL": str(self.jwks_file),
            "MMRAG_AUTH_JWT_ISSUER": self.issuer,
            "MMRAG_AUTH_JWT_AUDIENCE": self.audience,
        }


def make_issuer(directory: Path, kid: str = "test-key-1") -> Issuer:
    """A fresh RSA key and its JWKS file under ``directory``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwks_file = directory / f"jwks-{kid}.json"
    jwks_file.write_text(json.dumps({"keys": [{**public, "kid": kid, "use": "sig", "alg": "RS256"}]}))
    return Issuer(kid, key, jwks_file)


def write_api_keys(path: Path, callers: Mapping[str, tuple[Iterable[str], Iterable[str]]]) -> dict[str, str]:
    """Writes an API key file for ``{principal: (groups, roles)}``; returns each principal's key (shown once)."""
    keys = {principal: f"mmrag_{secrets.token_urlsafe(32)}" for principal in callers}
    entries = [
        {"sha256": api_key_hash(keys[p]), "principal": p, "groups": list(g), "roles": list(r)}
        for p, (g, r) in callers.items()
    ]
    path.write_text(json.dumps(entries, indent=1))
    return keys
