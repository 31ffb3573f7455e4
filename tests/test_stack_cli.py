"""`mmrag stack` as a service manager, on a real stack in a private state dir (its own Kafka, local S3, milvus-lite,
supervisor and services): up once only, status of every process, env for eval, bucket connect, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.kafka

SERVICES = ("sqs_bridge", "normalizer", "query_service")


def mmrag(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`mmrag ARGS` in a fresh process, with no MMRAG_* variable of this test process leaking in."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MMRAG_")}
    cmd = [sys.executable, "-m", "operator_cli", *args]
    return subprocess.run(cmd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def status(state_dir: Path) -> dict[str, dict[str, Any]]:
    done = mmrag("stack", "status", "--state-dir", str(state_dir), "--json")
    return {row["name"]: row for row in json.loads(done.stdout)}


def wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, clip_dir: Path) -> Iterator[Path]:
    state_dir = tmp_path_factory.mktemp("stack") / "state"
    up = mmrag(
        *("stack", "up", "--state-dir", str(state_dir), "--clip-model-dir", str(clip_dir)),
        *("--services", ",".join(SERVICES), "--shards", "1", "--timeout", "400"),
        timeout=600,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert "3 services ready" in up.stdout
        yield state_dir
    finally:
        down = mmrag("stack", "down", "--state-dir", str(state_dir), timeout=180)
        assert down.returncode == 0, down.stderr
        assert status_rc(state_dir) == 3  # nothing runs any more


def status_rc(state_dir: Path) -> int:
    return mmrag("stack", "status", "--state-dir", str(state_dir)).returncode


def processes_of(state_dir: Path, module: str) -> list[int]:
    """Pids of `python -m MODULE` processes started for ``state_dir`` (their environment names it)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (FileNotFoundError, PermissionError, ProcessLookupError, NotADirectoryError):
            continue
        if cmdline[1:3] == [b"-m", module.encode()] and f"MMRAG_STATE_DIR={state_dir}".encode() in environ:
            found.append(int(proc.name))
    return found


def test_status_lists_every_process_ready(stack: Path) -> None:
    rows = status(stack)
    assert set(rows) == {"kafka-1", "s3", "milvus", "supervisor", *SERVICES}
    assert all(row["ready"] and isinstance(row["pid"], int) for row in rows.values()), rows
    grpc_port = int(mmrag_env(stack)["MMRAG_QUERY_TARGET"].rsplit(":", 1)[1])
    assert grpc_port in rows["query_service"]["ports"]
    table = mmrag("stack", "status", "--state-dir", str(stack))
    assert table.returncode == 0
    assert all(name in table.stdout for name in rows)


def test_second_up_refuses_and_starts_nothing(stack: Path, clip_dir: Path) -> None:
    before = {name: row["pid"] for name, row in status(stack).items()}
    again = mmrag("stack", "up", "--state-dir", str(stack), "--clip-model-dir", str(clip_dir), timeout=300)
    assert again.returncode == 1
    assert "already runs" in again.stderr and "nothing started" in again.stderr
    assert {name: row["pid"] for name, row in status(stack).items()} == before
    assert processes_of(stack, "query_service") == [before["query_service"]]  # one query service only


def mmrag_env(state_dir: Path) -> dict[str, str]:
    done = mmrag("stack", "env", "--state-dir", str(state_dir))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(line.startswith("export MMRAG_") for line in lines)
    return dict(line.removeprefix("export ").split("=", 1) for line in lines)


def test_env_evals_into_a_working_upload(stack: Path, tmp_path: Path) -> None:
    env = mmrag_env(stack)
    assert {"MMRAG_BOOTSTRAP_SERVERS", "MMRAG_S3_ENDPOINT_URL", "MMRAG_QUERY_TARGET", "MMRAG_BUCKET"} <= set(env)
    note = tmp_path / "note.txt"
    note.write_text("uploaded through the stack's own endpoints")
    cli = f"{sys.executable} -m operator_cli"
    script = f'eval "$({cli} stack env --state-dir {stack})" && {cli} upload {note} --prefix evald'
    nowhere = {"MMRAG_CACHE_DIR": str(tmp_path / "no-stack-here")}  # the default state dir finds nothing
    base = {k: v for k, v in os.environ.items() if not k.startswith("MMRAG_")}
    done = subprocess.run(["bash", "-c", script], env={**base, **nowhere}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"s3://{env['MMRAG_BUCKET']}/evald/note.txt")
    assert read_object(env, env["MMRAG_BUCKET"], "evald/note.txt") == note.read_bytes()


def test_commands_find_the_stack_by_themselves_or_say_what_to_do(stack: Path, tmp_path: Path) -> None:
    note = tmp_path / "found.txt"
    note.write_text("found by MMRAG_STATE_DIR alone")
    found = mmrag("upload", str(note), env={"MMRAG_STATE_DIR": str(stack)})
    assert found.returncode == 0, found.stderr
    assert read_object(mmrag_env(stack), mmrag_env(stack)["MMRAG_BUCKET"], "found.txt") == note.read_bytes()

    lost = mmrag("upload", str(note), env={"MMRAG_CACHE_DIR": str(tmp_path / "empty")})
    assert lost.returncode == 2
    assert "MMRAG_S3_ENDPOINT_URL" in lost.stderr and "`mmrag stack up`" in lost.stderr
    assert "Traceback" not in lost.stderr

    # a command that talks to a deployment says when nothing named one and it falls back to the built-in defaults
    unnamed = mmrag("lag", env={"MMRAG_CACHE_DIR": str(tmp_path / "empty")}, timeout=60)
    assert "note: no local stack runs under" in unnamed.stderr and "127.0.0.1:50051" in unnamed.stderr
    named = mmrag("lag", env={"MMRAG_STATE_DIR": str(stack)})
    assert "note:" not in named.stderr, named.stderr


def read_object(env: dict[str, str], bucket: str, key: str) -> bytes:
    from mmrag.object_store import s3_client
    from mmrag.settings import S3Settings

    client = s3_client(S3Settings(s3_endpoint_url=env["MMRAG_S3_ENDPOINT_URL"]))
    return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_bucket_connect_feeds_a_bucket_made_elsewhere_into_the_pipeline(stack: Path) -> None:
    from confluent_kafka import Consumer

    from mmrag.object_store import s3_client
    from mmrag.settings import S3Settings

    env = mmrag_env(stack)
    s3 = s3_client(S3Settings(s3_endpoint_url=env["MMRAG_S3_ENDPOINT_URL"]))
    bucket = f"made-by-boto3-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)  # what `aws s3 mb` does: nothing watches it yet
    connect = mmrag("bucket", "connect", bucket, env={"MMRAG_STATE_DIR": str(stack)})
    assert connect.returncode == 0, connect.stderr
    assert "connected to" in connect.stdout
    again = mmrag("bucket", "connect", bucket, env={"MMRAG_STATE_DIR": str(stack)})
    assert "already sends its events" in again.stdout
    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"hello from a connected bucket")

    consumer = Consumer(
        {
            "bootstrap.servers": env["MMRAG_BOOTSTRAP_SERVERS"],
            "group.id": f"stack-cli-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe(["objects.v1"])
    try:
        seen = wait_for(lambda: _key_seen(consumer, f"{bucket}/hello.txt"), 90, "the object on objects.v1")
    finally:
        consumer.close()
    assert seen == f"{bucket}/hello.txt"


def _key_seen(consumer: Any, key: str) -> str | None:
    msg = consumer.poll(0.5)
    if msg is None or msg.error() or msg.key() is None:
        return None
    return key if msg.key().decode() == key else None


def test_supervisor_restarts_a_killed_service(stack: Path) -> None:
    old = status(stack)["normalizer"]
    os.kill(old["pid"], signal.SIGKILL)
    new = wait_for(
        lambda: (row := status(stack)["normalizer"])["ready"] and row["pid"] != old["pid"] and row,
        180,
        "the normalizer to be restarted and ready",
    )
    assert new["restarts"] == old["restarts"] + 1
    log = (stack / "logs" / "supervisor.log").read_text()
    assert f"normalizer (pid {old['pid']}) exited (killed by SIGKILL)" in log
    assert processes_of(stack, "producers.normalizer") == [new["pid"]]


def test_a_service_killed_by_a_crash_signal_is_reported_with_its_likely_cause(stack: Path) -> None:
    """A native crash (SIGSEGV) leaves the Python stack in the service's log (faulthandler) and the exit signal in
    `stack status`; a not-ready row that crashed names the likely cause and what to do."""
    from local_stack.stack_status import crash_hint

    old = status(stack)["normalizer"]
    os.kill(old["pid"], signal.SIGSEGV)
    new = wait_for(
        lambda: (row := status(stack)["normalizer"])["ready"] and row["pid"] != old["pid"] and row,
        180,
        "the normalizer to be restarted and ready after a SIGSEGV",
    )
    assert new["last_exit"] == "killed by SIGSEGV"
    assert "Fatal Python error: Segmentation fault" in (stack / "logs" / "normalizer.log").read_text()
    assert "a wheel built for another CPU" in crash_hint("normalizer", new["last_exit"])
    assert "consumers.llm_worker.native_build" in crash_hint("llm_worker-0", "killed by SIGILL")
    assert crash_hint("normalizer", "exit code 1") == ""
