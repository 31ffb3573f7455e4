"""Reading what the producers left on objects.v1 and the DLQ, and the counters their /metrics report."""

from __future__ import annotations

import re
import urllib.request

from mmrag.pb.events_pb2 import MediaKind, ObjectEvent
from tests.kafka_tools import Landed, read_topic


def object_records(bootstrap: str, prefix: str, idle_s: float = 1.5) -> list[tuple[str, str, str]]:
    """objects.v1 as (object_id, media kind name or "tombstone", content type or rejection), in offset order."""
    found = []
    for rec in sorted(
        read_topic(bootstrap, f"{prefix}objects.v1", idle_s=idle_s), key=lambda r: (r.partition, r.offset)
    ):
        if rec.value is None:
            found.append((str(rec.key), "tombstone", rec.headers.get("rejected", "")))
            continue
        event = ObjectEvent.FromString(rec.value)
        assert rec.key == event.object_id and rec.headers["object-id"] == event.object_id
        found.append((event.object_id, MediaKind.Name(event.media_kind), event.content_type))
    return found


def dlq_records(bootstrap: str, prefix: str, idle_s: float = 1.0) -> list[Landed]:
    return read_topic(bootstrap, f"{prefix}dlq.v1", idle_s=idle_s)


def metric(probe_url: str, name: str, **labels: str) -> float:
    """The value of one sample on a service's /metrics (0 when absent)."""
    text = urllib.request.urlopen(probe_url + "/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        match = re.match(rf"{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return 0.0
