"""`mmrag demo`: the whole system on this machine. Starts Kafka, local S3 and milvus-lite, every deployable as its
own process (retrieval shards on Faiss, the local stack's default), uploads a sample corpus (text documents and
easy-vqa images), waits with a progress bar until it is indexed, then runs text, image and cross-modal queries over
gRPC and prints the hits with their latency."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from local_stack.stack import Deployment
from mmrag.grpc_tls import query_channel
from mmrag.kafka_clients import consumer_config
from mmrag.pb import query_pb2, query_pb2_grpc
from mmrag.pb.events_pb2 import IndexState, IndexStatus
from mmrag.settings import default_clip_model_dir
from mmrag.topics import Topics
from operator_cli.ask import stream_answer

console = Console()
IMAGES_PER_CAPTION = 2
CAPTIONS = (
    "a blue triangle",
    "a red circle",
    "a green rectangle",
    "a yellow circle",
    "a teal triangle",
    "a gray rectangle",
)
TEXT_QUERIES = (
    "how do consumer groups share the partitions of a topic",
    "a blue triangle",
    "a red circle",
    "what happens when a producer crashes inside a transaction",
    "how to bake bread",
)

QUESTION = "How do Kafka consumer groups share the partitions of a topic?"


def ensure_demo_clip() -> Path:
    """The easy-vqa CLIP, trained once (~2 min on 2 cores) and cached; later runs reuse it."""
    from local_stack import clip_train

    out = default_clip_model_dir()
    console.rule("[bold]demo CLIP model")
    clip_train.main(["--out", str(out)])
    return out


def sample_files(workdir: Path) -> list[tuple[Path, str]]:
    """(file, key) pairs: the packaged text documents and a few easy-vqa test images per caption."""
    from local_stack.clip_train import captions_from_easy_vqa

    files = []
    for doc in sorted(resources.files("local_stack.sample_corpus").iterdir(), key=lambda p: p.name):
        if doc.name.endswith(".md"):
            path = workdir / doc.name
            path.write_bytes(doc.read_bytes())
            files.append((path, f"docs/{doc.name}"))
    taken: Counter[str] = Counter()
    for image, caption in captions_from_easy_vqa("test"):
        if caption in CAPTIONS and taken[caption] < IMAGES_PER_CAPTION:
            taken[caption] += 1
            name = f"{caption.removeprefix('a ').replace(' ', '-')}-{taken[caption]}.png"
            files.append((image, f"images/{name}"))
    return files


def wait_indexed(dep: Deployment, object_ids: set[str], timeout_s: float = 600) -> None:
    """Follows index-status.v1 with a progress bar until every object is indexed."""
    from confluent_kafka import Consumer

    consumer = Consumer(consumer_config(dep.endpoints.bootstrap_servers, f"demo-{time.time()}"))
    consumer.subscribe([Topics(dep.topic_prefix).index_status])
    done: set[str] = set()
    deadline = time.monotonic() + timeout_s
    columns = (TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("index", total=len(object_ids))
        while not object_ids <= done:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not indexed after {timeout_s}s: {sorted(object_ids - done)}; see the logs in "
                    f"{dep.state_dir / 'logs'}"
                )
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or msg.value() is None:
                continue
            status = IndexStatus.FromString(msg.value() or b"")
            if status.state == IndexState.INDEX_STATE_INDEXED and status.object_id in object_ids:
                done.add(status.object_id)
                progress.update(task, completed=len(done))
    consumer.close()


def show(stub: query_pb2_grpc.QueryServiceStub, title: str, query: query_pb2.SearchQuery) -> None:
    start = time.perf_counter()
    reply = stub.Search(query, timeout=10)
    elapsed_ms = (time.perf_counter() - start) * 1000
    table = Table(
        title=f"{title}  [{elapsed_ms:.1f} ms, {'partial' if reply.partial else 'all shards'}]", title_justify="left"
    )
    for column in ("#", "score", "object", "kind", "text"):
        table.add_column(column)
    for rank, r in enumerate(reply.results, 1):
        kind = "+".join(k for k, on in (("text", r.has_text), ("image", r.has_image)) if on)
        table.add_row(str(rank), f"{r.score:.3f}", r.object_id, kind, r.text[:70].replace("\n", " "))
    console.print(table)


def run_queries(port: int, image_query: Path) -> None:
    with query_channel(f"127.0.0.1:{port}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        for text in TEXT_QUERIES:
            show(stub, f"text: {text!r}", query_pb2.SearchQuery(text=text, top_k=4))
        show(stub, f"image: {image_query.name}", query_pb2.SearchQuery(image=image_query.read_bytes(), top_k=4))
        show(
            stub,
            "mixed: 'shape' + that image",
            query_pb2.SearchQuery(text="shape", image=image_query.read_bytes(), top_k=4),
        )


def run_demo(state_dir: Path, keep: bool) -> int:
    """Sets up, indexes the sample corpus, queries it; stops everything unless ``keep``."""
    from local_stack.lifecycle import StackOptions, stack_down, stack_up

    started = time.monotonic()
    state_dir = state_dir.absolute()
    stack_down(state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)  # a fresh corpus each run; the caches (jars, models, venv) stay
    clip_dir = ensure_demo_clip()
    console.rule("[bold]infrastructure and services")
    try:
        with console.status("starting Kafka, S3 and every service (supervised)"):
            dep = stack_up(state_dir, StackOptions(clip_model_dir=clip_dir)).deployment()
        console.print(
            f"Kafka {dep.endpoints.bootstrap_servers}, S3 {dep.endpoints.s3_endpoint_url}, "
            f"{dep.index_backend} shards ({dep.shards}), gRPC 127.0.0.1:{dep.grpc_port}; logs in {state_dir / 'logs'}"
        )
        console.rule("[bold]upload and index")
        _upload_and_query(dep)
        console.print(f"[green]demo finished in {time.monotonic() - started:.0f}s")
        return 0
    finally:
        if keep:
            console.print(
                f"stack left running: `export MMRAG_STATE_DIR={state_dir}` points every mmrag command at it; "
                f"`mmrag stack down --state-dir {state_dir}` stops it"
            )
        else:
            stack_down(state_dir)


def _upload_and_query(dep: Deployment) -> None:
    from mmrag.object_store import S3ObjectStore

    store = S3ObjectStore(dep.s3_settings(), "demo")
    workdir = Path(tempfile.mkdtemp(prefix="mmrag-demo-"))
    try:
        files = sample_files(workdir)
        t0 = time.monotonic()
        for path, key in files:
            store.put(dep.bucket, key, path.read_bytes())
        console.print(f"uploaded {len(files)} objects to s3://{dep.bucket}/")
        wait_indexed(dep, {f"{dep.bucket}/{key}" for _, key in files})
        console.print(f"indexed in {time.monotonic() - t0:.1f}s")
        run_queries(dep.grpc_port, next(p for p, k in files if "blue-triangle" in k))
        console.rule(f"[bold]ask: {QUESTION}")
        stream_answer(f"127.0.0.1:{dep.grpc_port}", QUESTION, top_k=8, timeout_s=120, console=console)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def register_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, default=Path(".mmrag/demo"), help="where the stack keeps its data")
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    parser.set_defaults(func=lambda args: run_demo(args.state_dir, args.keep))
