"""`mmrag search` and `mmrag ask` take the gRPC API's filters as flags (the stack test runs them against a server)."""

from __future__ import annotations

import argparse
import time

import pytest

from mmrag.pb import query_pb2
from operator_cli import ask, search

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("module", [search, ask])
def test_filter_flags_become_the_request_filter(module: object) -> None:
    parser = argparse.ArgumentParser()
    module.register_cli(parser.add_subparsers())  # type: ignore[attr-defined]
    name = "search" if module is search else "ask"
    args = parser.parse_args(
        [name, "kafka groups", "--bucket", "a", "--bucket", "b", "--prefix", "docs/", "--modality", "text"]
        + ["--content-type", "text/markdown", "--since", "2026-12-01T00:00:00Z", "--until", "1h", "--object", "a/x"]
    )
    where = module.filter_of(args)  # type: ignore[attr-defined]
    hour_ago_ms = (time.time() - 3600) * 1000
    assert abs(where.event_time_to_ms - hour_ago_ms) < 60_000
    where.event_time_to_ms = 0
    assert where == query_pb2.Filter(
        buckets=["a", "b"],
        key_prefix="docs/",
        modality="text",
        content_types=["text/markdown"],
        event_time_from_ms=1796083200000,
        object_ids=["a/x"],
    )
    assert module.filter_of(parser.parse_args([name, "q"])) == query_pb2.Filter()  # type: ignore[attr-defined]
