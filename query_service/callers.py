"""Who is calling: the authenticated caller of the gRPC call being served.

The auth interceptor (query_service/auth.py) verifies the call's token and sets the caller around the handler;
handlers and retrieval read it with ``current_caller()``. With auth off (MMRAG_AUTH_MODE=off, the local demo) the
interceptor serves every call as ``ANONYMOUS``: unrestricted, it sees every document.

Outside a served call (a thread the handler started without copying its context, a test that set no caller) the
caller is ``NO_CALLER``: no reader tokens, not unrestricted, so it sees nothing (fails closed, never open).
Code that hands work to another thread passes the ``Caller`` along (or runs it in ``contextvars.copy_context()``)."""

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
        users = {f"user:{self.principal}"} if self.principal else set()
        return frozenset(users | {f"group:{g}" for g in self.groups})


ANONYMOUS = Caller(principal="anonymous", unrestricted=True)
NO_CALLER = Caller(principal="")
_CURRENT: contextvars.ContextVar[Caller] = contextvars.ContextVar("mmrag_caller", default=NO_CALLER)


def current_caller() -> Caller:
    """The caller of the gRPC call being served (``ANONYMOUS``, unrestricted, with auth off); ``NO_CALLER``, who
    sees nothing, outside a served call."""
    return _CURRENT.get()


@contextmanager
def calling_as(caller: Caller) -> Iterator[Caller]:
    """Serves the enclosed code as ``caller`` (the interceptor wraps each handler in it; tests use it too)."""
    token = _CURRENT.set(caller)
    try:
        yield caller
    finally:
        _CURRENT.reset(token)
