"""Calibrates MMRAG_ASK_MIN_SCORE: the best retrieval score of questions the corpus answers vs questions about
nothing in it, through the production path (chunker, MiniLM + CLIP query encoder, fusion, Faiss, merge).

    uv run --frozen --no-sync python -m bench.ask_min_score [CLIP_DIR]   (default: the tests' random CLIP)

Corpus: the 33 text documents of `bench/data/mixed_corpus` and its 49 text/keyword questions (answered); plus
OFF_TOPIC, questions none of the documents touches. Prints both score distributions and the widest gap."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np

from bench.retrieval_eval import BUCKET, DATA, Corpus, Models, Query, object_rows, shards_of
from mmrag.faiss_halves import HalvesIndex
from mmrag.faiss_index import FaissIndex
from mmrag.pb.events_pb2 import SearchReply, SearchRequest

OFF_TOPIC = [
    "Who won the football world cup in 1998?",
    "What is the capital city of Mongolia?",
    "How do I knit a scarf with two colours?",
    "When did the Roman empire fall?",
    "What is a good recipe for lemon meringue pie?",
    "How many moons does Jupiter have?",
    "Who painted the Mona Lisa?",
    "How do I train a puppy to sit?",
    "What are the rules of cricket?",
    "Which wine goes with grilled salmon?",
    "How tall is Mount Kilimanjaro?",
    "What is the plot of Pride and Prejudice?",
]


def best_score(models: Models, indexes: Sequence[FaissIndex | HalvesIndex], text: str) -> float:
    from consumers.retrieval_worker.handler import to_hit
    from query_service.search import merge_top_k

    vector = models.query.encode(text, b"")
    request = SearchRequest(space_id=models.space.id, query_vector=vector.tolist(), top_k=5)
    replies = []
    for shard, index in enumerate(indexes):
        hits = index.search(np.asarray(request.query_vector, dtype=np.float32), request.top_k, shard)
        replies.append(SearchReply(shard=shard, space_id=models.space.id, hits=[to_hit(h) for h in hits]))
    merged = merge_top_k(replies, 5)
    return max((sh.hit.score for sh in merged), default=0.0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    docs = {f"{BUCKET}/docs/{p.name}": p.read_text() for p in sorted((DATA / "docs").glob("*.md"))}
    spec = json.loads((DATA / "questions.json").read_text())["questions"]
    answered = [Query(q["kind"], q["query"], frozenset()) for q in spec if q["kind"] in ("text", "keyword")]
    import tempfile
    from pathlib import Path

    from mmrag.clip import write_random_clip

    # The tests' CLIP (random, seed 0): a text question meets a text document through the MiniLM half.
    clip = write_random_clip(Path(tempfile.mkdtemp()) / "clip-random", seed=0) if not argv else Path(argv[0])
    models = Models.load(clip)
    rows = object_rows(Corpus(docs, {}, []), models, 2)
    indexes = [s.index for s in shards_of(rows, list(docs), models.space, 2)]
    on = sorted(best_score(models, indexes, q.text) for q in answered)
    off = sorted(best_score(models, indexes, t) for t in OFF_TOPIC)
    print(f"answered ({len(on)}): min {on[0]:.3f} p10 {on[len(on) // 10]:.3f} median {on[len(on) // 2]:.3f}")
    print(f"off-topic ({len(off)}): max {off[-1]:.3f} median {off[len(off) // 2]:.3f}")
    print("answered:", " ".join(f"{s:.3f}" for s in on))
    print("off-topic:", " ".join(f"{s:.3f}" for s in off))
    below = sum(s < off[-1] for s in on)
    print(f"answered questions under the highest off-topic score: {below}/{len(on)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
