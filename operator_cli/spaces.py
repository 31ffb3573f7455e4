"""The embedding spaces of a deployment as the operator sees them (`mmrag status` without an object, `mmrag reindex
--keep N`): every collection of a space under the prefix with its spec (models, precision, weights), its rows, and
whether the live alias or the rollback (the last swap's origin) names it; dropping the old ones on request.

Dropping a space removes its collection and, for a named (re-index) space, its consumer groups and its own topics
(``embeddings.<name>.v1``, ``vectors.<name>.v1``, ``index-status.<name>.v1``); the unnamed space's groups and topics
are the deployment's own and stay. The live space and the rollback target are never dropped."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient
from pymilvus import MilvusClient
from rich.table import Table

from mmrag.milvus_index import alias_target
from mmrag.milvus_manifest import manifest_collection
from mmrag.settings import BaseServiceSettings, VectorStoreSettings, group_name
from mmrag.space_catalog import SpaceSpec, parse_collection, space_collections
from mmrag.topics import SPACE_OWNED, Topics

SPACE_GROUPS = ("embedder-text", "embedder-text-heavy", "embedder-vision", "index-updater")  # a space's stages
SWAPS_FILE = "swaps.json"


@dataclass(frozen=True)
class SpaceRow:
    collection: str
    space_id: str
    space_name: str
    spec: SpaceSpec | None
    rows: int
    live: bool
    rollback: bool
    last_live_ms: int  # the last swap that made it live or moved the alias off it; 0 = never served

    @property
    def label(self) -> str:
        return f"{self.space_id}/{self.space_name}" if self.space_name else self.space_id

    @property
    def model(self) -> str:
        return self.spec.image_model_id if self.spec is not None else "? (no spec kept)"


def swaps_path() -> Path:
    """Where `mmrag reindex --swap` records each swap (``{alias, from, to, at_ms}``), oldest first."""
    return BaseServiceSettings().state_dir / "reindex" / SWAPS_FILE


def load_swaps(path: Path) -> list[dict[str, object]]:
    return json.loads(path.read_text()) if path.exists() else []


def spaces(client: MilvusClient, store: VectorStoreSettings, swaps: list[dict[str, object]]) -> list[SpaceRow]:
    """Every space collection under the prefix, live first, then by the last time it served (newest first)."""
    live = alias_target(client, store.live_alias)
    back = str(swaps[-1]["from"]) if swaps and swaps[-1].get("from") else None
    last: dict[str, int] = {}
    for swap in swaps:
        for end in ("from", "to"):
            if swap.get(end):
                last[str(swap[end])] = int(str(swap.get("at_ms", 0)))
    found = []
    for collection, spec in space_collections(client, store.collection_prefix):
        parsed = parse_collection(store.collection_prefix, collection)
        assert parsed is not None  # space_collections lists only names that parse
        stats = client.get_collection_stats(collection)
        row_count = int(stats.get("row_count", 0))
        is_live = collection == live
        found.append(
            SpaceRow(collection, *parsed, spec, row_count, is_live, collection == back, last.get(collection, 0))
        )
    return sorted(found, key=lambda s: (not s.live, -s.last_live_ms, s.collection))


def to_drop(rows: list[SpaceRow], keep: int) -> list[SpaceRow]:
    """The spaces beyond the ``keep`` most recently served old ones; never the live one or the rollback target.
    A space that never served (a re-index in progress or not swapped yet) counts as the most recent."""
    old = [s for s in rows if not s.live and not s.rollback]
    old.sort(key=lambda s: (s.last_live_ms != 0, -s.last_live_ms))
    return old[max(0, keep) :]


def drop(
    client: MilvusClient, admin: AdminClient, store: VectorStoreSettings, topic_prefix: str, space: SpaceRow
) -> list[str]:
    """Drops ``space``'s collection, then (a named space) its groups and topics; returns what it dropped."""
    if alias_target(client, store.live_alias) == space.collection:
        raise RuntimeError(f"{space.collection} became live meanwhile; not dropped")
    client.drop_collection(space.collection)
    dropped = [f"collection {space.collection}"]
    manifests = manifest_collection(space.collection)  # its rows' per-object id lists (mmrag.milvus_manifest)
    if client.has_collection(manifests):
        client.drop_collection(manifests)
        dropped.append(f"collection {manifests}")
    if not space.space_name:
        return dropped  # the unnamed space's groups and topics are the deployment's own
    existing = {g.group_id for g in admin.list_consumer_groups().result(timeout=15).valid}
    groups = [g for g in (group_name(topic_prefix, base, space.space_name) for base in SPACE_GROUPS) if g in existing]
    if groups:
        for group, future in admin.delete_consumer_groups(groups).items():
            future.result(timeout=15)
            dropped.append(f"group {group}")
    present = set(admin.list_topics(timeout=15).topics)
    own = Topics(topic_prefix, space.space_name)
    topics = [t for t in (own.name(base) for base in sorted(SPACE_OWNED)) if t in present]
    if topics:
        for topic, future in admin.delete_topics(topics).items():
            future.result(timeout=30)
            dropped.append(f"topic {topic}")
    return dropped


def spaces_table(rows: list[SpaceRow], alias: str) -> Table:
    table = Table(title=f"embedding spaces (alias {alias})", title_justify="left")
    for column in ("space", "collection", "CLIP model", "precision", "weights t/i", "rows", "serving"):
        table.add_column(column, justify="right" if column == "rows" else "left", overflow="fold")
    for s in rows:
        serving = "live" if s.live else ("rollback target" if s.rollback else "")
        spec = s.spec
        precision = spec.precision if spec else "?"
        weights = f"{spec.text_weight:g}/{spec.image_weight:g}" if spec else "?"
        table.add_row(s.label, s.collection, s.model, precision, weights, str(s.rows), serving)
    return table
