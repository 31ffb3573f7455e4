"""The deployables by name: `mmrag <name>` runs one, the local stack starts them as processes (`python -m MODULE`).

Module paths only, no imports: naming a deployable here loads none of its dependencies."""

from __future__ import annotations

SERVICE_MODULES = {
    "sqs_bridge": "producers.sqs_bridge",
    "normalizer": "producers.normalizer",
    "backfill": "producers.backfill",
    "webhook": "producers.webhook",
    "watch": "producers.watch",
    "text_embedder": "consumers.text_embedder",
    "vision_embedder": "consumers.vision_embedder",
    "index_updater": "index_updater",
    "retrieval_worker": "consumers.retrieval_worker",
    "faiss_worker": "consumers.faiss_worker",
    "ttl_pruning": "index_updater.pruning",
    "llm_worker": "consumers.llm_worker",
    "query_service": "query_service",
}
