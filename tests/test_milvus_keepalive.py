"""The Milvus client's keepalive against the milvus-lite server: with pymilvus' own settings (a ping every 10 s, also
without calls) the server answers GOAWAY too_many_pings within a minute of idling; with MILVUS_GRPC_OPTIONS (what
mmrag.milvus_index.milvus_client uses) it never does. Each client idles in its own process (gRPC logs the GOAWAY
on stderr from its C core)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
IDLE_S = 75

CLIENT = """
import sys, time
from pymilvus import MilvusClient
from mmrag.milvus_index import milvus_client
uri, ours = sys.argv[1], sys.argv[2] == "ours"
client = milvus_client(uri, timeout_s=30) if ours else MilvusClient(uri=uri, dedicated=True, timeout=30)
client.list_collections()
time.sleep(float(sys.argv[3]))
client.list_collections()
print("still answering", flush=True)
"""


def idle_client(uri: str, kind: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-c", CLIENT, uri, kind, str(IDLE_S)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_idle_client_is_not_sent_away_for_too_many_pings(infra: object) -> None:
    uri = str(infra.milvus_uri)  # type: ignore[attr-defined]
    ours, theirs = idle_client(uri, "ours"), idle_client(uri, "pymilvus")
    ours_out, ours_err = ours.communicate(timeout=IDLE_S + 120)
    theirs_out, theirs_err = theirs.communicate(timeout=120)
    assert "too_many_pings" in theirs_err, "pymilvus' defaults are refused (else this test proves nothing)"
    assert ours.returncode == 0 and "still answering" in ours_out, ours_err[-2000:]
    assert "too_many_pings" not in ours_err and "GOAWAY" not in ours_err, ours_err[-2000:]
