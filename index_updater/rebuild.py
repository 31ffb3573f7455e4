"""Rebuild a lost Milvus collection from vectors.v1, no re-embedding: the compacted log holds every live row of the
space (key = vector_id, tombstone = deleted), so reading it from the earliest offset and keeping the last value per
key gives the rows the updater last wrote; they are upserted as they are (same ids, same fp32 vectors).

The collection is ``<prefix>_<space id>[_<space name>]`` with the space id the records carry; the live alias is
taken only when it points nowhere (the same rule as the updater's). The space's spec (what serving needs to encode
queries for it, mmrag.space_catalog) is kept on the collection when the model settings given are that space's."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from mmrag.changelog import ChangelogReader, LoggedRecord
from mmrag.milvus_index import MilvusIndex
from mmrag.pb.events_pb2 import VectorRecord
from mmrag.settings import SpaceSettings, VectorStoreSettings
from mmrag.space import space_from_settings
from mmrag.space_catalog import SpaceSpec, spec_properties
from mmrag.topics import Topics
from mmrag.vector_log import decode_record, from_record

log = logging.getLogger(__name__)
STAGE = "rebuild"
UPSERT_BATCH = 256


@dataclass(frozen=True)
class Rebuilt:
    collection: str
    space_id: str
    rows: int
    spec_kept: bool = False  # the collection carries the space's spec (serving can encode queries for it)


def latest_records(records: Iterable[LoggedRecord]) -> dict[str, VectorRecord]:
    """The log as compaction leaves it: the last value per key, a key whose last record is a tombstone dropped."""
    latest: dict[str, bytes | None] = {}
    for record in records:
        if record.key is not None:
            latest[record.key] = record.value
    return {key: decode_record(value) for key, value in latest.items() if value is not None}


def rebuild_from_vectors(
    bootstrap_servers: str,
    topics: Topics,
    store: VectorStoreSettings,
    space_name: str = "",
    models: SpaceSettings | None = None,
) -> Rebuilt:
    """Upserts every live row of ``topics.vectors`` into its space's collection (created when missing), with the
    space's spec when ``models`` are that space's. RuntimeError naming the fix when the log is empty or holds rows
    of more than one space."""
    reader = ChangelogReader(bootstrap_servers, STAGE)
    topic = topics.vectors
    records = latest_records(reader.read(topic, range(reader.partition_count(topic))))
    spaces = sorted({r.space_id for r in records.values()})
    if len(spaces) != 1:
        found = f"rows of spaces {spaces}" if spaces else "no rows"
        raise RuntimeError(
            f"[{STAGE}] {topic} holds {found}; a rebuild needs the rows of one space -> check the topic "
            "(MMRAG_INDEX_BACKEND=both or faiss writes it) and the space name, or re-index from objects.v1"
        )
    dims = {len(r.vector) for r in records.values()}
    collection = store.collection_for(spaces[0], space_name)
    spec = _spec(models, spaces[0], space_name, collection)
    index = MilvusIndex(
        store.milvus_uri,
        collection,
        max(dims),
        store.milvus_token.get_secret_value(),
        alias=store.live_alias,
        properties=spec_properties(spec) if spec else None,
    )
    index.start()
    rows = [from_record(r) for _, r in sorted(records.items())]
    for start in range(0, len(rows), UPSERT_BATCH):
        index.upsert(rows[start : start + UPSERT_BATCH])
    log.info("rebuilt %s from %s: %d rows", index.collection, topic, len(rows))
    return Rebuilt(index.collection, spaces[0], len(rows), spec is not None)


def _spec(models: SpaceSettings | None, space_id: str, space_name: str, collection: str) -> SpaceSpec | None:
    space = space_from_settings(models) if models is not None else None
    if models is None or space is None or space.id != space_id:
        log.warning(
            "the model settings given build space %s, not %s: %s keeps no space spec, so only query services "
            "configured with that space can serve it -> pass the space's model settings (as for its embedders)",
            space.id if space else None,
            space_id,
            collection,
        )
        return None
    return SpaceSpec.of(models, space, space_name, collection)
