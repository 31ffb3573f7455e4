"""Authenticates a caller from its bearer token: a JWT verified against the issuer's JWKS (signature, issuer,
audience, expiry with leeway) or a static API key looked up by its sha256 in a file. Pure verification, no gRPC: the
call guard (query_service/call_guard.py) reads the token from the call's metadata and gates methods by role."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from query_service.auth_settings import AuthSettings
from query_service.callers import ANONYMOUS, Caller

log = logging.getLogger(__name__)
# The role each QueryService method needs; health and reflection are other services, never gated.
METHOD_ROLES = {"Search": "search", "GetObjectStatus": "search", "Ask": "ask"}


class AuthError(Exception):
    """The token is missing or invalid (UNAUTHENTICATED); the message is one line saying what to do."""


class KeysUnavailableError(AuthError):
    """The issuer's keys could not be fetched: the token was not judged (UNAVAILABLE, retry)."""

    PREFIX = "the issuer's keys could not be fetched"


def api_key_hash(key: str) -> str:
    """How an API key is stored: the hex sha256 of the key (keys are random 32-byte secrets, so no salt is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, ``a.b`` looking inside nested objects (Keycloak's ``realm_access.roles``)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _names(value: Any) -> frozenset[str]:
    """A list of names, or a space-separated string of them (OAuth's ``scope``); anything else is none."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list | tuple):
        return frozenset(str(v) for v in value)
    return frozenset()


class JwksFile:
    """A JWKS in a file (PyJWKClient takes http(s) only): read again when it changes, so a rotated key is found."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime_ns = -1
        self._keys: jwt.PyJWKSet | None = None

    def get_jwk_set(self) -> jwt.PyJWKSet:
        """The file's keys, read again when it changed; PyJWKClientConnectionError when unreadable."""
        with self._lock:
            try:
                mtime = os.stat(self.path).st_mtime_ns
                if mtime != self._mtime_ns or self._keys is None:
                    self._keys, self._mtime_ns = jwt.PyJWKSet.from_json(self.path.read_text()), mtime
            except OSError as exc:
                raise jwt.PyJWKClientConnectionError(f"JWKS file {self.path}: {exc.strerror}") from exc
            return self._keys

    def get_signing_key_from_jwt(self, token: str) -> jwt.PyJWK:
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self.get_jwk_set().keys:
            if key.key_id == kid:
                return key
        raise jwt.PyJWKClientError(f"Unable to find a signing key that matches: {kid!r}")


class JwtVerifier:
    """Verifies JWTs against a JWKS (a URL or a file, fetched again for a key id it does not know)."""

    def __init__(self, s: AuthSettings) -> None:
        if not s.auth_jwks_url:
            raise ValueError(
                f"[query service] MMRAG_AUTH_MODE={s.auth_mode} needs MMRAG_AUTH_JWKS_URL (your OIDC provider's "
                "jwks_uri, or a JWKS file) -> set it, or MMRAG_AUTH_MODE=api-key / off"
            )
        url = s.auth_jwks_url
        self.jwks: JwksFile | jwt.PyJWKClient = (
            jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=s.auth_jwks_cache_s, timeout=5)
            if url.startswith(("http://", "https://"))
            else JwksFile(Path(url.removeprefix("file://")))
        )
        self.settings = s

    def warm_up(self) -> None:
        """Fetches the keys once at start: a wrong URL shows in the log at once (a WARNING, not fatal: the provider
        may come up later, and every call fetches again until it does)."""
        try:
            found = len(self.jwks.get_jwk_set().keys)
        except jwt.PyJWTError as exc:
            log.warning(
                "JWKS %s not fetched at start (%s): calls are refused until it is", self.settings.auth_jwks_url, exc
            )
            return
        log.info("JWKS %s: %d keys", self.settings.auth_jwks_url, found)

    def verify(self, token: str) -> Caller:
        s = self.settings
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=list(s.auth_jwt_algorithms),
                audience=s.auth_jwt_audience or None,
                issuer=s.auth_jwt_issuer or None,
                leeway=s.auth_jwt_leeway_s,
                options={"require": ["exp"], "verify_aud": bool(s.auth_jwt_audience)},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise KeysUnavailableError(
                f"{KeysUnavailableError.PREFIX} from {s.auth_jwks_url} ({exc}) -> retry"
            ) from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc} -> get a new token from your identity provider") from exc
        principal = _claim(claims, s.auth_principal_claim)
        if not isinstance(principal, str) or not principal:
            raise AuthError(f"the token has no {s.auth_principal_claim!r} claim -> ask for a token naming the caller")
        groups = _names(_claim(claims, s.auth_groups_claim))
        return Caller(principal, groups, _names(_claim(claims, s.auth_roles_claim)))


@dataclass(frozen=True)
class _KeyFile:
    mtime_ns: int
    callers: Mapping[str, Caller]


class ApiKeys:
    """Static API keys from a JSON file of ``{sha256, principal, groups, roles}``; read again when it changes."""

    def __init__(self, path: Path | None) -> None:
        if path is None:
            raise ValueError(
                "[query service] API keys need MMRAG_AUTH_API_KEYS_FILE (make entries with `mmrag auth api-key`) "
                "-> set it, or MMRAG_AUTH_MODE=jwt / off"
            )
        self.path = path
        self._lock = threading.Lock()
        self._loaded = self._load()

    def _load(self) -> _KeyFile:
        try:
            mtime = os.stat(self.path).st_mtime_ns
            entries = json.loads(self.path.read_text())
            callers = {
                str(e["sha256"]).lower(): Caller(str(e["principal"]), _names(e.get("groups")), _names(e.get("roles")))
                for e in entries
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"[query service] API key file {self.path}: {exc!r} -> a JSON list of "
                '{"sha256": ..., "principal": ..., "groups": [...], "roles": [...]}'
            ) from exc
        return _KeyFile(mtime, callers)

    def _current(self) -> _KeyFile:
        with self._lock:
            try:
                if os.stat(self.path).st_mtime_ns != self._loaded.mtime_ns:
                    self._loaded = self._load()
            except (OSError, ValueError) as exc:  # keep the keys we have: a half-written file must not lock all out
                log.warning("API key file %s not read again (%s); the previous keys stay in use", self.path, exc)
            return self._loaded

    def verify(self, token: str) -> Caller:
        caller = self._current().callers.get(api_key_hash(token))
        if caller is None:
            raise AuthError("unknown API key -> check the key, or ask for one (`mmrag auth api-key`)")
        return caller


class Authenticator:
    """Turns a call's bearer token into its Caller per MMRAG_AUTH_MODE; ``off``: every call is ANONYMOUS."""

    def __init__(self, s: AuthSettings) -> None:
        self.mode = s.auth_mode
        self.jwt = JwtVerifier(s) if "jwt" in s.auth_mode else None
        self.api_keys = ApiKeys(s.auth_api_keys_file) if "api-key" in s.auth_mode else None
        if s.auth_mode == "off":
            log.warning(
                "AUTH IS OFF (MMRAG_AUTH_MODE=off): every caller is anonymous and may Search, Ask and read the status "
                "of EVERY document -> for a local demo only; set MMRAG_AUTH_MODE=jwt or api-key anywhere else"
            )

    def warm_up(self) -> None:
        if self.jwt is not None:
            self.jwt.warm_up()

    def caller(self, authorization: str | None) -> Caller:
        """The caller an ``authorization`` header value names; AuthError when missing or invalid."""
        if self.mode == "off":
            return ANONYMOUS
        if not authorization:
            raise AuthError("no credentials -> send the metadata 'authorization: Bearer <token>'")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(
                "the authorization metadata is not 'Bearer <token>' -> send 'authorization: Bearer <token>'"
            )
        looks_like_jwt = token.count(".") == 2
        if self.jwt is not None and (looks_like_jwt or self.api_keys is None):
            return self.jwt.verify(token)
        if self.api_keys is not None:
            return self.api_keys.verify(token)
        raise AuthError("an API key was sent but this server takes JWTs only -> send a JWT")


def missing_role(caller: Caller, method: str) -> str | None:
    """Why ``caller`` may not call QueryService ``method`` (one line), None when it may."""
    if caller.unrestricted:
        return None
    role = METHOD_ROLES.get(method)
    if role is None:
        return f"{method} is not open to callers -> it needs a role this server does not grant"
    if role in caller.roles:
        return None
    return f"{caller.principal} lacks the role {role!r} that {method} needs -> ask an admin to grant it"
