"""Who may call the query service (MMRAG_AUTH_* settings): how callers authenticate, which claims name their groups
and roles, and what the audit trail keeps. A mixin of QueryServiceSettings, read by query_service/auth.py."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

AuthMode = Literal["off", "jwt", "api-key", "jwt+api-key"]


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MMRAG_", frozen=True, extra="ignore")

    auth_mode: AuthMode = Field(
        default="jwt",
        description="off: every caller is anonymous and sees every document (the local demo; logged as a WARNING); "
        "jwt: `authorization: Bearer <JWT>` verified against MMRAG_AUTH_JWKS_URL; api-key: `Bearer <key>` looked up "
        "in MMRAG_AUTH_API_KEYS_FILE; jwt+api-key: either",
    )
    auth_jwks_url: str = Field(
        default="", description="the JWKS of the token issuer: https://... (an OIDC provider's jwks_uri) or a file path"
    )
    auth_jwks_cache_s: float = Field(
        default=300.0, gt=0, description="keys are fetched again after this long (an unknown key id fetches at once)"
    )
    auth_jwt_issuer: str = Field(default="", description="the `iss` a JWT must carry ('' = any issuer)")
    auth_jwt_audience: str = Field(default="", description="the `aud` a JWT must carry ('' = no audience check)")
    auth_jwt_algorithms: tuple[str, ...] = Field(
        default=("RS256", "ES256", "PS256", "EdDSA"), description="signature algorithms accepted (never 'none')"
    )
    auth_jwt_leeway_s: float = Field(default=30.0, ge=0, description="clock skew allowed on exp/nbf/iat")
    auth_principal_claim: str = Field(default="sub", description="the claim naming the principal")
    auth_groups_claim: str = Field(
        default="groups", description="the claim listing the groups (a list or a space-separated string; a.b = nested)"
    )
    auth_roles_claim: str = Field(
        default="roles", description="the claim listing the roles, e.g. realm_access.roles for Keycloak"
    )
    auth_api_keys_file: Path | None = Field(
        default=None,
        description="JSON: [{sha256, principal, groups, roles}] (keys stored hashed: `mmrag auth api-key` makes one); "
        "read again when the file changes",
    )
    audit_question: bool = Field(
        default=False, description="audit records keep the question text (PII-redacted); False: its length only"
    )
