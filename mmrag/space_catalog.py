"""Where every process finds an embedding space: its spec (space id and name, the model settings that build its
query encoder) is a property of its Milvus collection, written by the index updater that creates the collection
(and by a rebuild). The live alias names a collection, so one ``describe_collection(alias)`` gives the serving
collection and its spec together: a swap (``alter_alias``) moves both at once.

A collection made before specs were kept has none; its space id and name are read from its name
(``<prefix>_<space id>[_<space name>]``) and only a process configured with that space can build its encoder.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from pymilvus import MilvusClient

from mmrag.settings import SpaceSettings
from mmrag.space import EmbeddingSpace, space_from_settings

SPEC_PROPERTY = "mmrag.space"
_SPACE_ID = re.compile(r"[0-9a-f]{10}")


@dataclass(frozen=True)
class SpaceSpec:
    """One space as serving needs it: which collection, and how to encode a query for it."""

    space_id: str
    space_name: str
    collection: str
    clip_model_dir: str
    precision: str
    text_weight: float
    image_weight: float
    clip_text_for_text: bool
    text_model_id: str = ""
    image_model_id: str = ""
    dim: int = 0
    encoder_backend: str = "torch"  # specs written before backends were a setting are torch spaces

    @classmethod
    def of(cls, settings: SpaceSettings, space: EmbeddingSpace, space_name: str, collection: str) -> SpaceSpec:
        return cls(
            space_id=space.id,
            space_name=space_name,
            collection=collection,
            clip_model_dir=str(settings.clip_model_dir),
            precision=settings.precision,
            text_weight=settings.text_weight,
            image_weight=settings.image_weight,
            clip_text_for_text=settings.clip_text_for_text,
            text_model_id=space.text_model_id,
            image_model_id=space.image_model_id,
            dim=space.dim,
            encoder_backend=settings.encoder_backend,
        )

    @property
    def label(self) -> str:
        """``<space id>`` or ``<space id>/<space name>``: how logs and errors name the space."""
        return f"{self.space_id}/{self.space_name}" if self.space_name else self.space_id

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SpaceSpec:
        """ValueError when ``text`` is not a spec (another tool's property, a damaged one)."""
        try:
            fields = json.loads(text)
            return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a space spec: {exc}") from exc

    def settings(self, base: SpaceSettings) -> SpaceSettings:
        """``base`` (the process's own: threads, ...) with this space's model settings."""
        return base.model_copy(
            update={
                "clip_model_dir": Path(self.clip_model_dir),
                "precision": self.precision,
                "text_weight": self.text_weight,
                "image_weight": self.image_weight,
                "clip_text_for_text": self.clip_text_for_text,
                "encoder_backend": self.encoder_backend,
            }
        )

    def check(self, base: SpaceSettings) -> EmbeddingSpace:
        """The space these settings build here; ValueError naming the fix when it is not this spec's space (other
        weights under the same directory, another MiniLM package) or its model directory cannot be read."""
        try:
            space = space_from_settings(self.settings(base))
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"space {self.label}: cannot read its CLIP at {self.clip_model_dir} ({exc}) -> install the model "
                "there on this host, or roll the alias back (`mmrag reindex --rollback`)"
            ) from exc
        if space.id != self.space_id:
            raise ValueError(
                f"space {self.label}: the models here give space {space.id} ({space.image_model_id}), not "
                f"{self.space_id} ({self.image_model_id}) -> give this host the same model files"
            )
        return space


def parse_collection(prefix: str, collection: str) -> tuple[str, str] | None:
    """(space id, space name) from ``<prefix>_<space id>[_<space name>]``, or None for another name."""
    head = f"{prefix}_"
    if not collection.startswith(head):
        return None
    space_id, _, name = collection[len(head) :].partition("_")
    return (space_id, name) if _SPACE_ID.fullmatch(space_id) else None


def collection_spec(client: MilvusClient, collection: str) -> tuple[str, SpaceSpec | None]:
    """The collection ``collection`` names (an alias resolves to its collection) and its spec (None when it keeps
    none). Raises what pymilvus raises (the caller classifies)."""
    described = client.describe_collection(collection)
    text = (described.get("properties") or {}).get(SPEC_PROPERTY)
    return str(described["collection_name"]), SpaceSpec.from_json(text) if text else None


def live_collection(client: MilvusClient, alias: str) -> tuple[str, SpaceSpec | None] | None:
    """What ``alias`` serves (collection and spec, from one describe), or None when it points nowhere."""
    if alias not in client.list_aliases().get("aliases", []):
        return None
    return collection_spec(client, alias)


def spec_properties(spec: SpaceSpec) -> dict[str, str]:
    """The collection properties that keep ``spec`` (what the updater and a rebuild write)."""
    return {SPEC_PROPERTY: spec.to_json()}


def space_collections(client: MilvusClient, prefix: str) -> list[tuple[str, SpaceSpec | None]]:
    """Every collection of a space under ``prefix`` with its spec (None when it keeps none), by name."""
    names = sorted(c for c in client.list_collections() if parse_collection(prefix, c) is not None)
    return [collection_spec(client, c) for c in names]
