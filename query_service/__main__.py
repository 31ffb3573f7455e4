"""`python -m query_service`: the gRPC query front end."""

from __future__ import annotations

import sys
import threading

from mmrag.clip import ClipEncoder
from mmrag.kafka_clients import make_producer
from mmrag.request_reply import FAST_PRODUCER
from mmrag.service import service_main
from mmrag.space import space_from_settings
from mmrag.telemetry import Probes
from mmrag.text_encoder import MiniLMEncoder
from query_service.query_encoder import QueryEncoder
from query_service.reply_router import ReplyRouter
from query_service.search import ShardedSearch
from query_service.server import QueryServicer, QueryServiceSettings, serve


class QueryService:
    def __init__(self, settings: QueryServiceSettings, probes: Probes) -> None:
        self.settings = settings
        self.probes = probes

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        space = space_from_settings(s)
        encoder = QueryEncoder(
            space, MiniLMEncoder(threads=s.torch_threads), ClipEncoder(s.clip_model_dir, threads=s.torch_threads)
        )
        encoder.warm_up()
        router = ReplyRouter(s.bootstrap_servers, s.topics.search_replies, s.reply_partition, s.instance_id)
        router.start()
        producer = make_producer(s.bootstrap_servers, None, **FAST_PRODUCER)
        search = ShardedSearch(producer, router, s.topics.search_requests, space.id, s.shards)
        try:
            serve(s, QueryServicer(s, encoder, search), self.probes, stop)
        finally:
            router.close()
            producer.flush(5)


def main(argv: list[str] | None = None) -> int:
    return service_main("query_service", QueryServiceSettings, QueryService, argv)


if __name__ == "__main__":
    sys.exit(main())
