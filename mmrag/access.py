"""Who does what on Kafka: one declaration per principal (a deployable, the backfill job, the operator), from which
the local stack's ACLs, the docs' principals table and the Helm chart's ``KafkaUser`` resources are generated.

Topics are named by their registry bases (mmrag.topics.SPECS); ``principals()`` resolves them for one deployment
(topic prefix) and space. A principal may touch nothing its declaration lacks: the secured broker refuses it."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmrag.topics import SPECS, Topics

_BASES = frozenset(spec.base for spec in SPECS)
# Every stage that reads a changelog (restore, partition counts) does so with a throwaway group
# ``<stage>-restore-<uuid>`` (mmrag.changelog): never joined nor committed, but librdkafka looks its coordinator up.
RESTORE_SUFFIX = "-restore-"
# The stack's and the operator CLI's principal: a super user (creates topics and ACLs, resets offsets, replays).
ADMIN = "admin"


@dataclass(frozen=True)
class Declaration:
    """What one principal does, by topic base and group base (names without the deployment's prefix).

    ``groups``: consumer groups it joins and commits (``<prefix><base>``; in a re-index space also
    ``<prefix><base>.<space>``). ``group_prefixes``: groups it names but never joins (assigned readers), matched by
    prefix and not under the deployment's prefix. ``groups_described``: groups whose members it looks at.
    ``transactional_prefix``: its transactional ids start with ``<prefix><this>`` (None: not transactional)."""

    name: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    group_prefixes: tuple[str, ...] = ()
    groups_described: tuple[str, ...] = ()
    transactional_prefix: str | None = None
    idempotent: bool = True
    summary: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.reads + self.writes) - _BASES)
        if unknown:
            raise ValueError(f"[access] {self.name}: topics {unknown} are not registered -> add them to mmrag.topics")


@dataclass(frozen=True)
class Principal:
    """A declaration resolved for one deployment: literal topic names, group names and prefixes."""

    name: str
    reads: frozenset[str]
    writes: frozenset[str]
    groups: frozenset[str]
    group_prefixes: frozenset[str]
    groups_described: frozenset[str] = field(default=frozenset())
    transactional_id_prefix: str | None = None
    idempotent: bool = True


def _restore(*stages: str) -> tuple[str, ...]:
    return tuple(f"{stage}{RESTORE_SUFFIX}" for stage in stages)


DECLARATIONS: tuple[Declaration, ...] = (
    Declaration("sqs_bridge", writes=("s3-events", "dlq"), summary="SQS notifications onto s3-events"),
    Declaration("webhook", writes=("s3-events", "dlq"), summary="HTTP notifications onto s3-events"),
    Declaration(
        "backfill",
        reads=("backfill-checkpoints",),
        writes=("s3-events", "dlq", "backfill-checkpoints"),
        group_prefixes=_restore("backfill"),
        transactional_prefix="backfill-",
        summary="bucket listing + checkpoint in one transaction (job)",
    ),
    Declaration(
        "normalizer",
        reads=("s3-events", "objects"),
        writes=("objects", "dlq"),
        groups=("object-normalizer",),
        group_prefixes=_restore("normalizer"),
        transactional_prefix="object-normalizer",
        summary="s3-events -> objects (restores its table from objects)",
    ),
    Declaration(
        "text_embedder",
        reads=("objects", "objects.heavy"),
        writes=("embeddings", "objects.heavy", "dlq"),
        groups=("embedder-text", "embedder-text-heavy"),
        transactional_prefix="embedder-text",
        summary="both lanes: objects -> embeddings, heavy objects forwarded to objects.heavy",
    ),
    Declaration(
        "vision_embedder",
        reads=("objects",),
        writes=("embeddings", "dlq"),
        groups=("embedder-vision",),
        transactional_prefix="embedder-vision",
        summary="objects -> embeddings",
    ),
    Declaration(
        "index_updater",
        reads=("embeddings", "vectors", "vectors.applied"),
        writes=("vectors", "index-status", "dlq"),
        groups=("index-updater",),
        group_prefixes=_restore("index_updater"),
        summary="embeddings -> Milvus and/or vectors, index-status",
    ),
    Declaration(
        "retrieval_worker",
        reads=("search.requests",),
        writes=("search.replies", "dlq"),
        group_prefixes=("{prefix}retrieval-shard-",),
        summary="search requests of its shard -> replies",
    ),
    Declaration(
        "faiss_worker",
        reads=("search.requests", "vectors"),
        writes=("search.replies", "vectors.applied", "dlq"),
        group_prefixes=("{prefix}retrieval-shard-", "faiss_worker-"),
        summary="like the retrieval worker, from its shard's vectors partition",
    ),
    Declaration(
        "ttl_pruning",
        reads=("search.replies", "index-status", "object-access"),
        writes=("object-access", "embeddings"),
        groups=("ttl-access",),
        group_prefixes=_restore("ttl_pruning"),
        summary="accesses onto object-access, expiry deletes onto embeddings (job)",
    ),
    Declaration(
        "llm_worker",
        reads=("llm.requests",),
        writes=("llm.replies", "llm.heartbeats", "dlq"),
        groups=("llm-workers",),
        summary="generate requests -> streamed replies, heartbeats",
    ),
    Declaration(
        "query_service",
        reads=("search.replies", "llm.replies", "llm.heartbeats", "objects", "index-status", "dlq"),
        writes=("search.requests", "llm.requests", "eval-log", "audit"),
        group_prefixes=("query-replies-", "status-view-", "llm-presence-"),
        groups_described=("{prefix}retrieval-shard-",),
        summary="gRPC front end: requests out, replies in (assigned), object status, shard presence",
    ),
)


def declaration(name: str) -> Declaration:
    """The declaration of principal ``name``; KeyError naming the known ones."""
    found = {d.name: d for d in DECLARATIONS}
    if name not in found:
        raise KeyError(f"[access] no principal {name!r} -> one of {sorted(found)}")
    return found[name]


def _group_pattern(pattern: str, topic_prefix: str) -> str:
    return pattern.format(prefix=topic_prefix)


def resolve(decl: Declaration, topic_prefix: str = "", space: str = "") -> Principal:
    """``decl`` for the deployment ``topic_prefix``; a re-index ``space`` adds that space's own topics and groups
    (``<base>.<space>.v1``, ``<group>.<space>``) to the live space's."""
    # a re-index space's stages write its own space-owned topics and read the shared ones
    spaces = {Topics(topic_prefix), Topics(topic_prefix, space)}
    groups = {f"{topic_prefix}{g}" for g in decl.groups}
    if space:
        groups |= {f"{topic_prefix}{g}.{space}" for g in decl.groups}
    txn = f"{topic_prefix}{decl.transactional_prefix}" if decl.transactional_prefix is not None else None
    return Principal(
        name=decl.name,
        reads=frozenset(t.name(b) for t in spaces for b in decl.reads),
        writes=frozenset(t.name(b) for t in spaces for b in decl.writes),
        groups=frozenset(groups),
        group_prefixes=frozenset(_group_pattern(p, topic_prefix) for p in decl.group_prefixes),
        groups_described=frozenset(_group_pattern(p, topic_prefix) for p in decl.groups_described),
        transactional_id_prefix=txn,
        idempotent=decl.idempotent,
    )


def principals(topic_prefix: str = "", space: str = "") -> tuple[Principal, ...]:
    """Every principal of the deployment ``topic_prefix`` (and re-index ``space``), in declaration order."""
    return tuple(resolve(d, topic_prefix, space) for d in DECLARATIONS)


def _names(values: frozenset[str] | tuple[str, ...], suffix: str = "") -> str:
    return ", ".join(f"`{v}{suffix}`" for v in sorted(values)) or "–"


def markdown_table() -> str:
    """The principals table of docs/architecture.md "Security" (generated: a test keeps the docs equal to it)."""
    rows = [
        "| principal | reads | writes | groups (READ) | transactional ids (prefix) | what for |",
        "|---|---|---|---|---|---|",
    ]
    for decl in DECLARATIONS:
        p = resolve(decl)
        groups = _names(p.groups) if p.groups else ""
        prefixed = _names(p.group_prefixes, "*")
        described = f"; DESCRIBE {_names(p.groups_described, '*')}" if p.groups_described else ""
        group_cell = ", ".join(x for x in (groups, prefixed if p.group_prefixes else "") if x) or "–"
        txn = f"`{p.transactional_id_prefix}*`" if p.transactional_id_prefix is not None else "– (idempotent)"
        rows.append(
            f"| {p.name} | {_names(p.reads)} | {_names(p.writes)} | {group_cell}{described} | {txn} | {decl.summary} |"
        )
    return "\n".join(rows)
