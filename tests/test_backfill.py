"""Backfill exactly once: killed inside an open transaction, restarted, it ends with every listed object on
s3-events.v1 once (committed) and on objects.v1 once, and shows its progress (count, events/s, ETA) throughout."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from mmrag.object_store import s3_client
from tests.kafka_tools import read_topic, wait_for

pytestmark = pytest.mark.kafka


def fill_bucket(deployment, bucket: str, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    """A bucket without notifications holding ``count`` small text objects (one key with a space and a plus)."""
    s3 = s3_client(deployment.s3_settings())
    s3.create_bucket(Bucket=bucket)
    keys = [f"history/{'a b+c ' if i == 7 else ''}obj-{i:05d}.txt" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=f"object {k}".encode()), keys))
    return keys


def kill_midway_and_resume(deployment, bootstrap: str, count: int, batch: int, kill_after: int, hold_s: float) -> None:  # type: ignore[no-untyped-def]
    bucket = f"hist-{deployment.bucket}"
    keys = fill_bucket(deployment, bucket, count)
    prefix = deployment.topic_prefix
    deployment.service("normalizer").start()
    target = {"MMRAG_BACKFILL_URI": f"s3://{bucket}/history/", "MMRAG_BACKFILL_BATCH": str(batch)}
    first = deployment.service("backfill", MMRAG_FAULT_HOLD_BEFORE_COMMIT_S=str(hold_s), **target).start()
    marker = deployment.state_dir / "hold-backfill"
    wait_for(
        lambda: marker.exists() and json.loads(marker.read_text())["committed_batches"] >= kill_after,
        120,
        f"batch {kill_after + 1} open in its transaction",
        interval_s=0.05,
    )
    first.kill()  # SIGKILL inside the open transaction
    second = deployment.service("backfill", "1", **target).start()
    assert second.proc is not None and second.proc.wait(600) == 0, second.log_tail()

    committed = read_topic(bootstrap, f"{prefix}s3-events.v1", idle_s=2.0)
    assert len(committed) == count and sorted(r.key for r in committed) == sorted(f"{bucket}/{k}" for k in keys)
    everything = read_topic(bootstrap, f"{prefix}s3-events.v1", idle_s=2.0, committed_only=False)
    assert len(everything) == count + batch  # the killed transaction's batch is there, aborted, never read

    def objects() -> list[str]:
        return [str(r.key) for r in read_topic(bootstrap, f"{prefix}objects.v1", idle_s=2.0)]

    wait_for(lambda: len(objects()) >= count, 600, f"{count} object events", interval_s=2)
    landed = Counter(objects())
    assert len(landed) == count and set(landed.values()) == {1}

    first_log, second_log = first.log_path.read_text(), second.log_path.read_text()
    assert first_log.count("events/s, ETA") >= 2  # progress throughout, not only at the end
    assert f"resumes after 'history/obj-{kill_after * batch - 1:05d}.txt'" in second_log
    assert f"{count:,}/{count:,} objects" in second_log
    assert f"{count - kill_after * batch} objects emitted" in second_log


def test_backfill_killed_midway_resumes_without_re_emitting(deployment, bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    kill_midway_and_resume(deployment, bootstrap, count=300, batch=25, kill_after=3, hold_s=1.0)


@pytest.mark.slow
def test_backfill_of_ten_thousand_objects_killed_once(deployment, bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    kill_midway_and_resume(deployment, bootstrap, count=10_000, batch=500, kill_after=8, hold_s=2.0)
