"""Who is calling: the authenticated caller of the gRPC call being served.

The auth interceptor (query_service/auth.py) verifies the call's token and sets the caller around the handler;
handlers and retrieval read it with ``current_caller()``. With auth off (MMRAG_AUTH_MODE=off, the local demo) every
call is served as ``ANONYMOUS``: unrestricted, it sees every document."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Caller:
    """A principal (``alice``), its groups and its roles; ``unrestricted`` only when auth is off."""

    principal: str
    groups: frozenset[str] = field(default_factory=frozenset)
    roles: frozenset[str] = field(default_factory=frozenset)
    unrestricted: bool = False

    def reader_tokens(self) -> frozenset[str]:
        """The reader tokens this caller matches in an object's readers: ``user:<principal>`` and
        ``group:<g>`` for each of its groups (the spelling of object tags and prefix grants)."""
        return frozenset({f"user:{self.principal}"} | {f"group:{g}" for g in self.groups})


ANONYMOUS = Caller(principal="anonymous", unrestricted=True)
_CURRENT: contextvars.ContextVar[Caller] = contextvars.ContextVar("mmrag_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the gRPC call being served; ``ANONYMOUS`` (unrestricted) outside a call or with auth off."""
    return _CURRENT.get()


@contextmanager
def calling_as(caller: Caller) -> Iterator[Caller]:
    """Serves the enclosed code as ``caller`` (the interceptor wraps each handler in it; tests use it too)."""
    token = _CURRENT.set(caller)
    try:
        yield caller
    finally:
        _CURRENT.reset(token)
