"""The local stack's supervisor on real processes: a service that keeps crashing is restarted with doubling backoff,
logged with its exit and last error line; the state file and the helpers `stack up` relies on."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from local_stack.lifecycle import _port, _selected
from local_stack.services import Service, last_error_line
from local_stack.state import ServiceRecord, StackRecord
from local_stack.supervisor import Supervisor, read_status

pytestmark = pytest.mark.unit


def test_a_crashing_service_is_restarted_with_doubling_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "crash_now.py").write_text('raise RuntimeError("[crasher] boom -> fix the crasher")\n')
    crasher = Service("crasher", "crash_now", {"PYTHONPATH": str(tmp_path)}, tmp_path / "logs")  # a crash loop
    supervisor = Supervisor(tmp_path, [crasher], interval_s=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,))
    with caplog.at_level(logging.INFO, logger="local_stack.supervisor"):
        thread.start()
        deadline = time.monotonic() + 60
        while len(waits := [r.getMessage() for r in caplog.records if "restarting in" in r.getMessage()]) < 3:
            assert time.monotonic() < deadline, f"fewer than 3 restarts scheduled in 60 s: {waits}"
            time.sleep(0.1)
        stop.set()  # during the third wait (4 s): two restarts done
        thread.join(10)
    assert [w.split("restarting in ")[1].split("s")[0] for w in waits[:3]] == ["1", "2", "4"]
    assert "exited (exit code 1)" in waits[0]
    assert "last error line: RuntimeError: [crasher] boom -> fix the crasher" in waits[0]
    status = read_status(tmp_path)["crasher"]
    assert status["restarts"] == 2
    assert status["last_exit"] == "exit code 1"


def test_last_error_line_takes_the_exception_after_a_traceback(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text(
        "2026 INFO ready\nTraceback (most recent call last):\n  File x\nRuntimeError: [stage] boom -> fix it\n"
        "2026 INFO still running\n"
    )
    assert last_error_line(log) == "RuntimeError: [stage] boom -> fix it"
    assert last_error_line(tmp_path / "missing.log") == ""


def test_stack_record_round_trip_and_client_env(tmp_path: Path) -> None:
    query = Service("query_service", "query_service", {"MMRAG_GRPC_PORT": "50123"}, tmp_path / "logs", 41000)
    settings = {"MMRAG_BOOTSTRAP_SERVERS": "127.0.0.1:1", "MMRAG_S3_ENDPOINT_URL": "http://x", "MMRAG_SHARD": "0"}
    StackRecord(str(tmp_path), settings, "bkt", [ServiceRecord.of(query)]).save()
    loaded = StackRecord.load(tmp_path)
    assert loaded is not None and loaded.services[0].service().probe_port == 41000
    assert loaded.client_env() == {
        "MMRAG_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "MMRAG_S3_ENDPOINT_URL": "http://x",
        "MMRAG_BUCKET": "bkt",
        "MMRAG_QUERY_TARGET": "127.0.0.1:50123",
    }


def test_stack_record_gives_back_the_deployment_it_was_made_from(tmp_path: Path) -> None:
    from local_stack.stack import Deployment, Endpoints

    endpoints = Endpoints("127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3")
    dep = Deployment(tmp_path, endpoints, tmp_path / "clip", "p.", "bkt", "q", 3, 50123, "http://127.0.0.1:2/1234/q")
    record = StackRecord(str(tmp_path), dep.env(), dep.bucket, [])
    record.save()
    loaded = StackRecord.load(tmp_path)
    assert loaded is not None and loaded.deployment() == dep


def test_service_selection_and_ports() -> None:
    assert _selected("retrieval_worker-1", ("retrieval_worker",))
    assert _selected("normalizer", ())
    assert not _selected("normalizer", ("sqs_bridge",))
    taken = Service("x", "x", {}, Path("/tmp")).probe_port  # a free port, handed out once
    assert _port(taken, "--grpc-port") == taken
    with socket.create_server(("127.0.0.1", 0)) as busy, pytest.raises(ValueError, match="in use.*--grpc-port"):
        _port(busy.getsockname()[1], "--grpc-port")
