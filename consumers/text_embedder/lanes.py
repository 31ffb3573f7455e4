"""Cost lanes of the text embedder group (docs/architecture.md "Embedders" -> "Cost lanes").

The light lane (``MMRAG_LANE=light``, group embedder-text) extracts under limits far below the hard ones; an object
that passes one of them is not dead-lettered but forwarded, in the batch's transaction, to objects.heavy.v1, where
the heavy lane (``MMRAG_LANE=heavy``, group embedder-text-heavy) does the slow work under the hard limits only. Each
light limit is checked as early as the cost shows: the event's size before any read, a PDF's page count and the
pixels it would OCR before any page is read, chunks while tokenizing, the time between steps. So a small upload
never waits for a scanned book in its batch longer than the light budget."""

from __future__ import annotations

from dataclasses import dataclass

from mmrag.messages import Envelope, Output
from mmrag.pb.events_pb2 import MediaKind, ObjectEvent

LANE_REASON_HEADER = "lane-reason"


class HeavyObject(Exception):  # noqa: N818 - a routing decision, not a failure
    """The object is over the light lane's ``setting`` (``reason`` says by how much): the lane forwards it."""

    def __init__(self, subject: str, setting: str, reason: str) -> None:
        self.subject = subject
        self.setting = setting
        self.reason = reason
        super().__init__(f"{subject}: {reason}")


@dataclass(frozen=True)
class LightLimits:
    """What one object may cost the light lane; each has a setting MMRAG_LIGHT_<NAME>."""

    max_bytes: int = 128 << 10
    max_pages: int = 20
    max_ocr_pixels: int = 4_000_000
    max_chunks: int = 64
    budget_s: float = 2.0

    def over(self, subject: str, name: str, value: float, limit: float, what: str) -> None:
        """Raises HeavyObject when ``value`` (of ``what``) is over ``limit``, the light setting ``name``."""
        if value > limit:
            setting = f"MMRAG_LIGHT_{name}"
            raise HeavyObject(
                subject, setting, f"{_shown(value)} {what}, over the light lane's {setting}={_shown(limit)}"
            )

    def by_event(self, event: ObjectEvent) -> None:
        """The size check, from the event alone (images excepted: their cost is the pixels they OCR)."""
        if event.media_kind != MediaKind.MEDIA_KIND_IMAGE:
            self.over(event.object_id, "MAX_BYTES", event.size, self.max_bytes, "bytes")


def _shown(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def forward(envelope: Envelope[ObjectEvent], topic: str, reason: str) -> Output:
    """The consumed record again, key and identity headers kept, on the heavy lane's topic (a tombstone stays one).
    A readers-only record goes under its object's id, so it follows that object's versions there."""
    headers = {k: v for k, v in envelope.headers.items() if k != "traceparent"}
    headers[LANE_REASON_HEADER] = reason
    key = envelope.value.object_id if envelope.value is not None and envelope.value.readers_only else envelope.key
    return Output(topic, key, envelope.value, headers)
