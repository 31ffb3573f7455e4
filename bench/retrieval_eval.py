"""Retrieval quality in a mixed corpus: recall@5 / precision@5 for a text-only, an image-only and a mixed index,
side by side, over the same questions.

    uv run --frozen --no-sync python -m bench.retrieval_eval [--clip DIR] [--shards 2] [--json OUT]

Corpus (`bench/data/mixed_corpus`): 33 short technical documents on unrelated topics (Kafka, PostgreSQL, TLS,
sourdough, bicycles, ...; a few long enough for two chunks; exact identifiers, error codes and rare words), and
easy-vqa's drawn shapes: 5 test-split images of each of the 24 classes "a <colour> <shape>" (120 images).
Questions with known answers: 37 paraphrased text questions and 12 keyword questions (an identifier or rare word
only its document contains) -> documents; the 24 captions -> their 5 images; 8 train-split images as image
queries -> the 5 indexed images of their class.

Path: in-process, through the production functions with Kafka left out: the text embedder's chunker, MiniLM and
the space's CLIP, the index updater's fusion (`plan_update`), the Faiss index the Faiss workers search (exact,
flat; one per shard), the retrieval worker's request handling and the query service's merge. Objects are ranked
as the Search API returns them: the first five distinct objects of the answer. The CLIP must be the trained demo
CLIP (`mmrag models train-clip`, the default MMRAG_CLIP_MODEL_DIR): a random one gives chance-level images.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from consumers.retrieval_worker.keyword import KeywordShard
from consumers.text_embedder.chunking import chunk_text
from index_updater.fusion import plan_update
from mmrag.clip import ClipEncoder
from mmrag.faiss_halves import HalvesIndex, index_for
from mmrag.faiss_index import FaissIndex, FaissSettings
from mmrag.ids import shard_for
from mmrag.images import decode_image
from mmrag.pb.events_pb2 import Chunk, EmbeddingBatch, Modality, SearchReply, SearchRequest
from mmrag.settings import SpaceSettings
from mmrag.space import EmbeddingSpace, space_clip_encoder, space_from_settings, space_minilm_encoder
from mmrag.text_encoder import MiniLMEncoder
from mmrag.vector_index import VectorRow
from query_service.caches import EmbeddingCache
from query_service.filters import Scope
from query_service.fusion import Fusion, JointFusion, ModalityFusion, own_half, reciprocal_rank_fusion
from query_service.query_encoder import QueryEncoder
from query_service.search import list_replies, outcome_of, search_request
from query_service.types import ShardHit

DATA = Path(__file__).resolve().parent / "data" / "mixed_corpus"
BUCKET = "eval"
K = 5
IMAGES_PER_CLASS = 5
IMAGE_QUERIES = 8


@dataclass(frozen=True)
class Query:
    kind: str  # text | keyword | caption | image
    text: str
    relevant: frozenset[str]
    image: bytes = b""


@dataclass(frozen=True)
class Corpus:
    docs: dict[str, str]  # object id -> text
    images: dict[str, bytes]  # object id -> PNG bytes
    queries: list[Query]


def load_corpus(per_class: int = IMAGES_PER_CLASS, image_queries: int = IMAGE_QUERIES) -> Corpus:
    """The documents and questions of `bench/data/mixed_corpus` plus easy-vqa images (needs the `local` extra)."""
    from local_stack.clip_train import captions_from_easy_vqa

    docs = {f"{BUCKET}/docs/{p.name}": p.read_text() for p in sorted((DATA / "docs").glob("*.md"))}
    spec = json.loads((DATA / "questions.json").read_text())["questions"]
    queries = [Query(q["kind"], q["query"], frozenset(f"{BUCKET}/docs/{r}" for r in q["relevant"])) for q in spec]
    images: dict[str, bytes] = {}
    by_class: dict[str, list[str]] = {}
    for path, caption in captions_from_easy_vqa("test"):
        members = by_class.setdefault(caption, [])
        if len(members) < per_class:
            oid = f"{BUCKET}/images/{caption.replace(' ', '-')}-{len(members)}.png"
            members.append(oid)
            images[oid] = path.read_bytes()
    queries += [Query("caption", c, frozenset(m)) for c, m in sorted(by_class.items())]
    asked: set[str] = set()
    for path, caption in captions_from_easy_vqa("train"):
        if len(asked) < image_queries and caption not in asked and caption in by_class:
            asked.add(caption)
            queries.append(Query("image", "", frozenset(by_class[caption]), image=path.read_bytes()))
    return Corpus(docs, images, queries)


@dataclass
class Models:
    space: EmbeddingSpace
    minilm: MiniLMEncoder
    clip: ClipEncoder
    query: QueryEncoder = field(init=False)

    def __post_init__(self) -> None:
        self.query = QueryEncoder(self.space, self.minilm, self.clip, EmbeddingCache(1 << 14))

    @classmethod
    def load(cls, clip_dir: Path | None = None) -> Models:
        settings = SpaceSettings() if clip_dir is None else SpaceSettings(clip_model_dir=clip_dir)
        models = cls(space_from_settings(settings), space_minilm_encoder(settings), space_clip_encoder(settings))
        models.query.warm_up()
        return models


def object_rows(corpus: Corpus, models: Models, shards: int) -> dict[str, list[VectorRow]]:
    """Every object's index rows, made the way the embedders and the index updater make them."""
    rows: dict[str, list[VectorRow]] = {}
    tokenizer = models.minilm.load_tokenizer()
    for oid, text in corpus.docs.items():
        chunks = chunk_text(text, tokenizer)
        vectors = models.minilm.encode([c.text for c in chunks])
        batch = EmbeddingBatch(object_id=oid, version="v1", modality=Modality.MODALITY_TEXT, event_time_ms=1)
        for c, v in zip(chunks, vectors, strict=True):
            batch.chunks.append(
                Chunk(index=c.index, text=c.text, char_start=c.char_start, char_end=c.char_end, vector=v.tolist())
            )
        rows[oid] = plan_update(batch, [], models.space, shards, now_ms=2).upserts
    oids = list(corpus.images)
    vectors = models.clip.encode_images([decode_image(corpus.images[o], o, "eval") for o in oids])
    for oid, v in zip(oids, vectors, strict=True):
        batch = EmbeddingBatch(object_id=oid, version="v1", modality=Modality.MODALITY_IMAGE, event_time_ms=1)
        batch.chunks.append(Chunk(index=0, vector=v.tolist()))
        rows[oid] = plan_update(batch, [], models.space, shards, now_ms=2).upserts
    return rows


@dataclass(frozen=True)
class Shard:
    """One shard as a retrieval worker holds it: the exact vector index and the keyword index built from it."""

    index: FaissIndex | HalvesIndex
    keywords: KeywordShard


def shards_of(rows: dict[str, list[VectorRow]], oids: Sequence[str], space: EmbeddingSpace, shards: int) -> list[Shard]:
    """One exact index per shard holding the rows of ``oids`` (each object on its shard, as the updater places it),
    with its keyword index."""
    indexes = [index_for(space.dim, space.text_dim, FaissSettings()) for _ in range(shards)]
    for oid in oids:
        indexes[shard_for(oid, shards)].upsert(rows[oid])
    made = [Shard(index, KeywordShard(index, k, refresh_s=0)) for k, index in enumerate(indexes)]
    for shard in made:
        shard.keywords.refresh()
    return made


Searcher = Callable[[Query], list[str]]


@dataclass(frozen=True)
class Setup:
    """A fusion as the query service runs it: the lists' fusion, and whether the keyword lists take part."""

    fusion: Fusion
    keyword: bool


def searcher(models: Models, shards: list[Shard], setup: Setup, top_k: int = K) -> Searcher:
    """The Search API's ranking of objects for a query: the query service's requests, merge and fusion, each shard
    answered by the retrieval worker's search, without Kafka in between."""
    from consumers.retrieval_worker.handler import answer_into

    space = models.space

    def answer(shard: Shard, k: int, request: SearchRequest) -> SearchReply:
        reply = SearchReply(shard=k, space_id=space.id)
        answer_into(reply, shard.index, shard.keywords, request, k, 100)
        return reply

    def search(query: Query) -> list[str]:
        vector = models.query.encode(query.text, query.image)
        request = search_request(setup.fusion, vector, query.text, setup.keyword, top_k, space.id, Scope())
        replies = list_replies(request, [answer(s, k, request) for k, s in enumerate(shards)])
        outcome = outcome_of(replies, setup.fusion, vector, top_k, raw_chunks=False, shards=len(shards))
        return [h.hit.object_id for h in outcome.hits]

    return search


@dataclass(frozen=True)
class RankFusion(ModalityFusion):
    """The alternative measured against CLIP's verdict: the text and image lists fused by reciprocal rank."""

    name: str = "rrf"

    def fuse(
        self, lists: dict[str, list[ShardHit]], top_k: int, per_object: bool, vector: np.ndarray
    ) -> list[ShardHit]:
        key: Callable[[ShardHit], str] = (lambda h: h.hit.object_id) if per_object else (lambda h: h.hit.vector_id)
        own = [[h for h in hits if own_half(name, h.hit)] for name, hits in lists.items()]
        return reciprocal_rank_fusion(own, key)[:top_k]


@dataclass(frozen=True)
class Score:
    recall: float
    precision: float
    mrr: float
    intruders: int  # top-K places taken by objects of the other modality than the relevant ones
    queries: int


def score(queries: Sequence[Query], search: Searcher, k: int = K) -> Score:
    recall = precision = mrr = 0.0
    intruders = 0
    for q in queries:
        ranked = search(q)
        top = ranked[:k]
        found = len(set(top) & q.relevant)
        recall += found / len(q.relevant)
        precision += found / k
        first = next((i for i, o in enumerate(ranked) if o in q.relevant), None)
        mrr += 0.0 if first is None else 1.0 / (first + 1)
        wanted = "images" if "/images/" in next(iter(q.relevant)) else "docs"
        intruders += sum(1 for o in top if f"/{wanted}/" not in o)
    n = max(1, len(queries))
    return Score(recall / n, precision / n, mrr / n, intruders, len(queries))


INDEXES = ("text-only", "image-only", "mixed")
KINDS = {
    "text": "text question -> doc",
    "keyword": "keyword -> doc",
    "caption": "caption -> image",
    "image": "image -> image",
}
ANSWERED_BY = {
    "text": ("text-only", "mixed"),
    "keyword": ("text-only", "mixed"),
    "caption": ("image-only", "mixed"),
    "image": ("image-only", "mixed"),
}


def evaluate(
    corpus: Corpus, models: Models, setups: dict[str, Setup], shards: int = 2
) -> dict[str, dict[str, dict[str, Score]]]:
    """{setup: {query kind: {index: Score}}} for every index a kind's answers can be in."""
    rows = object_rows(corpus, models, shards)
    members = {
        "text-only": list(corpus.docs),
        "image-only": list(corpus.images),
        "mixed": [*corpus.docs, *corpus.images],
    }
    built = {name: shards_of(rows, oids, models.space, shards) for name, oids in members.items()}
    tables: dict[str, dict[str, dict[str, Score]]] = {}
    for setup_name, setup in setups.items():
        table = tables.setdefault(setup_name, {})
        for kind in KINDS:
            queries = [q for q in corpus.queries if q.kind == kind]
            table[kind] = {n: score(queries, searcher(models, built[n], setup)) for n in ANSWERED_BY[kind]}
    return tables


def candidate_setups(models: Models) -> dict[str, Setup]:
    """What is compared: the joint ranking (before), both lists by reciprocal rank, and CLIP's verdict (the query
    service's default) without and with the keyword lists."""
    space = models.space
    verdict = ModalityFusion(space.text_dim, space.image_weight, models.query.clip_sentences)
    return {
        "joint": Setup(JointFusion(), keyword=False),
        "rrf": Setup(RankFusion(space.text_dim, space.image_weight, models.query.clip_sentences), keyword=False),
        "modality": Setup(verdict, keyword=False),
        "modality+bm25": Setup(verdict, keyword=True),
    }


def print_table(tables: dict[str, dict[str, dict[str, Score]]]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title=f"recall@{K} / precision@{K} / MRR (intruders: top-{K} places taken by the other modality)")
    out.add_column("queries")
    out.add_column("fusion")
    for name in INDEXES:
        out.add_column(name, justify="right")
    for kind in KINDS:
        for fusion, table in tables.items():
            by_index = table[kind]
            cells = []
            for name in INDEXES:
                s = by_index.get(name)
                cells.append("-" if s is None else f"{s.recall:.3f} / {s.precision:.3f} / {s.mrr:.3f} ({s.intruders})")
            out.add_row(f"{KINDS[kind]} (n={next(iter(by_index.values())).queries})", fusion, *cells)
    Console(width=160).print(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=None, help="CLIP directory (default: MMRAG_CLIP_MODEL_DIR)")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--fusion", action="append", default=None, help="fusions to compare (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the tables as JSON here")
    args = parser.parse_args(argv)
    models = Models.load(args.clip)
    chosen = {n: f for n, f in candidate_setups(models).items() if args.fusion is None or n in args.fusion}
    tables = evaluate(load_corpus(), models, chosen, args.shards)
    print_table(tables)
    if args.json:
        blob = {f: {k: {n: s.__dict__ for n, s in v.items()} for k, v in t.items()} for f, t in tables.items()}
        args.json.write_text(json.dumps(blob, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
