"""What handlers see and return: decoded envelopes in, outputs out. No confluent_kafka types cross this line."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from mmrag.errors import PermanentError

T = TypeVar("T")
M = TypeVar("M", bound=Message)

CONTENT_TYPE_PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class Envelope(Generic[T]):
    """One consumed message, decoded. ``value`` is None for a tombstone (a delete)."""

    key: str | None
    value: T | None
    headers: Mapping[str, str]
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True)
class Output:
    """A message to produce. A protobuf ``value`` is serialized with content-type/schema headers; bytes go as they
    are (DLQ records keep the original bytes); None = tombstone."""

    topic: str
    key: str | None
    value: Message | bytes | None
    headers: Mapping[str, str] = field(default_factory=dict)
    partition: int | None = None


def proto_decoder(cls: type[M], stage: str) -> Callable[[bytes | None, Mapping[str, str]], M | None]:
    """A decoder for one protobuf message type; undecodable bytes raise PermanentError (the runner DLQs them)."""

    def decode(raw: bytes | None, headers: Mapping[str, str]) -> M | None:
        if raw is None:
            return None
        schema = headers.get("schema")
        if schema and schema != cls.DESCRIPTOR.full_name:
            raise PermanentError(
                stage,
                "message",
                f"schema header is {schema!r}, expected {cls.DESCRIPTOR.full_name}",
                "fix the producer",
            )
        msg = cls()
        try:
            msg.ParseFromString(raw)
        except DecodeError as exc:
            raise PermanentError(
                stage,
                "message",
                f"not a valid {cls.DESCRIPTOR.full_name} ({exc})",
                "fix the producer, then replay the DLQ",
            ) from exc
        return msg

    return decode


def output_headers(output: Output) -> dict[str, str]:
    """The standard headers of an output: content-type and schema (message name), plus the output's own."""
    headers = dict(output.headers)
    if isinstance(output.value, Message):
        headers.setdefault("content-type", CONTENT_TYPE_PROTOBUF)
        headers.setdefault("schema", output.value.DESCRIPTOR.full_name)
    return headers


def serialize(value: Message | bytes | None) -> bytes | None:
    return value.SerializeToString() if isinstance(value, Message) else value


def now_ms() -> int:
    return int(time.time() * 1000)
