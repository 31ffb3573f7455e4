"""`python -m query_service`: the gRPC query front end."""

from __future__ import annotations

import sys
import threading
from functools import partial

from confluent_kafka import Producer

from mmrag import pii
from mmrag.kafka_clients import make_producer
from mmrag.pb.events_pb2 import GenerateChunk, SearchReply
from mmrag.request_reply import FAST_PRODUCER
from mmrag.service import service_main
from mmrag.space import space_clip_encoder, space_from_settings, space_minilm_encoder
from mmrag.space_catalog import SpaceSpec
from mmrag.telemetry import Probes
from mmrag.text_encoder import MiniLMEncoder
from query_service.answer_cache import AnswerCache, open_answer_cache
from query_service.ask import Asker, AskLimits
from query_service.audit import AuditLog
from query_service.auth import Authenticator
from query_service.caches import EmbeddingCache, ResultCache
from query_service.call_guard import CallGuard
from query_service.eval_log import EvalLog
from query_service.fusion import Fusion, JointFusion, ModalityFusion
from query_service.generation import GenerationClient
from query_service.index_changes import IndexedObjects
from query_service.llm_breaker import LlmBreaker, WorkerPresence
from query_service.query_encoder import QueryEncoder
from query_service.reply_client import RequestReplyClient, Route
from query_service.search import ShardedSearch
from query_service.server import SERVICE_NAME, QueryServicer, serve
from query_service.settings import QueryServiceSettings
from query_service.shard_presence import ShardPresence, shard_groups
from query_service.spaces import LiveSpaces, ServingBuilder, ServingSpace, milvus_alias_resolver, probe_shards
from query_service.status_view import StatusView


class QueryService:
    def __init__(self, settings: QueryServiceSettings, probes: Probes) -> None:
        self.settings = settings
        self.probes = probes

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        pii.redact_logs()  # questions and answers may carry PII: nothing logged keeps it
        t = s.topics
        authenticator = Authenticator(s)  # first: a misconfigured auth stops the start with the fix to make
        authenticator.warm_up()
        replies = RequestReplyClient(
            s.bootstrap_servers,
            {t.search_replies: SearchReply, t.llm_replies: GenerateChunk},
            s.reply_partition,
            s.instance_id,
        )
        replies.start()
        breaker = LlmBreaker(s.llm_breaker_fail_max, s.llm_breaker_reset_s)
        presence = WorkerPresence(s.bootstrap_servers, t.llm_heartbeats, s.llm_worker_max_age_s, breaker.worker_arrived)
        presence.start()
        self.probes.add_check("replies", replies.health)
        self.probes.add_check("llm", lambda: (True, f"{breaker.detail()}, llm workers: {presence.workers}"))
        producer = make_producer(s.bootstrap_servers, None, **FAST_PRODUCER)
        status_view = StatusView(s.bootstrap_servers, t, s.instance_id)
        indexed = IndexedObjects()  # the index's current versions: the answer cache's and Search's freshness
        answers = open_answer_cache(s, lambda: status_view.caught_up, indexed)  # one for every space (scoped by id)
        status_view.on_index_status(answers.on_index_status if answers is not None else indexed.observe)
        build = serving_builder(s, producer, replies, breaker, presence, indexed, answers)
        space = space_from_settings(s)
        configured = SpaceSpec.of(s, space, s.space_name, s.collection_for(space.id, s.space_name))
        resolve = milvus_alias_resolver(s) if s.space_refresh_s > 0 else None
        probe = partial(probe_shards, timeout_s=max(5.0, 4 * s.search_timeout_s))
        spaces = LiveSpaces(configured, build, resolve, s.collection_prefix, s.space_refresh_s, probe=probe)
        spaces.start()
        self.probes.add_check("space", spaces.health)
        status_view.start()
        self.probes.add_check("status-view", status_view.health)
        try:
            guard = CallGuard(SERVICE_NAME, authenticator, AuditLog(producer, t.audit, s.audit_question))
            serve(s, QueryServicer(s, spaces.current, status_view), self.probes, stop, [guard])
        finally:
            spaces.close()
            status_view.close()
            presence.close()
            replies.close()
            producer.flush(5)


def serving_builder(
    s: QueryServiceSettings,
    producer: Producer,
    replies: RequestReplyClient,
    breaker: LlmBreaker,
    presence: WorkerPresence,
    indexed: IndexedObjects | None = None,
    answers: AnswerCache | None = None,
) -> ServingBuilder:
    """Builds one space's encoder (its CLIP; the MiniLM encoder is shared by the spaces of one backend and
    precision), fusion, search and Ask, all bound to that space; the routes, the LLM client, the breaker and the
    eval log are shared by every space."""
    t = s.topics
    minilms: dict[str, MiniLMEncoder] = {}
    route = Route(producer, t.search_requests, t.search_replies, replies)
    shard_groups_now = shard_groups(s.topic_prefix, s.shards)  # one view for every space: one group per shard
    shards_present = ShardPresence(s.bootstrap_servers, shard_groups_now, s.shard_presence_interval_s).start()
    generation = GenerationClient(
        Route(producer, t.llm_requests, t.llm_replies, replies), s.llm_first_token_timeout_s, s.llm_stall_timeout_s
    )
    limits = AskLimits(
        s.search_timeout_s,
        s.ask_timeout_s,
        s.ask_max_sources,
        s.ask_chunks_per_source,
        s.ask_max_tokens,
        s.ask_min_score,
        s.ask_source_words,
        s.ask_label_bucket,
        s.ask_support_min,
        s.ask_answer_min,
    )
    eval_log = EvalLog(producer, t.eval_log)

    def build(spec: SpaceSpec) -> ServingSpace:
        space = spec.check(s)
        settings = spec.settings(s)
        minilm = space_minilm_encoder(settings)
        minilm = minilms.setdefault(minilm.model_id, minilm)
        encoder = QueryEncoder(space, minilm, space_clip_encoder(settings), EmbeddingCache(s.embedding_cache_size))
        encoder.warm_up()
        fusion: Fusion = (
            ModalityFusion(space.text_dim, space.image_weight, encoder.clip_sentences)
            if s.fusion == "modality"
            else JointFusion()
        )
        changes = (lambda: indexed.changes) if indexed is not None else (lambda: 0)
        results = ResultCache(s.result_cache_ttl_s, s.result_cache_stale_s, s.result_cache_size, changes=changes)
        search = ShardedSearch(
            route, space.id, s.shards, fusion, results, s.keyword_search, spec.space_name, indexed, shards_present
        )
        asker = Asker(limits, encoder, search, generation, breaker, presence, eval_log, answers)
        return ServingSpace(spec, encoder, search, asker)

    return build


def main(argv: list[str] | None = None) -> int:
    return service_main("query_service", QueryServiceSettings, QueryService, argv)


if __name__ == "__main__":
    sys.exit(main())
