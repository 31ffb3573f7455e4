"""Run a real Apache Kafka KRaft cluster on loopback from Maven Central jars, for the demo and tests (Linux).

`python -m local_stack.kafka_broker fetch|start|stop|status`; `<dir>/cluster.json` lets other processes stop it."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from subprocess import DEVNULL, PIPE, Popen, run
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from local_stack.certs import write_private
from local_stack.processes import free_port
from local_stack.secure_kafka import SecurityFiles
from mmrag.settings import cache_dir as project_cache_dir

KAFKA_VERSION = "4.3.1"
# kafka_2.13 4.3.1 brings slf4j-api 1.7.36 and log4j 2.25.4 (`mvn dependency:tree`): the binding must match both.
LOG4J_VERSION = "2.25.4"
STATE_FILE = "cluster.json"
_MARKER = ".complete"
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion><groupId>local.mmrag</groupId>
  <artifactId>kafka-jars</artifactId><version>1</version><packaging>pom</packaging><dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
</dependencies></project>
"""
_LOG4J2 = (  # the broker logs to <node dir>/server.log only, never to stdout
    "appender.file.type=File\nappender.file.name=FILE\nappender.file.fileName={log}\n"
    "appender.file.layout.type=PatternLayout\nappender.file.layout.pattern=[%d] %p %m (%c)%n\n"
    "rootLogger.level=INFO\nrootLogger.appenderRef.file.ref=FILE\nshutdownHook=disable\n"
)
# Fencing a crashed broker after 3 s instead of 9 s shrinks the produce stall during a failover accordingly.
_PLAIN_LISTENERS = """listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
"""
_SERVER_PROPERTIES = """process.roles=broker,controller
node.id={node.node_id}
controller.quorum.voters={voters}
{listeners}controller.listener.names=CONTROLLER
log.dirs={node.dir}/data
num.partitions=1
auto.create.topics.enable=false
default.replication.factor={rf}
min.insync.replicas={isr}
offsets.topic.replication.factor={rf}
group.initial.rebalance.delay.ms=0
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={isr}
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={isr}
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
"""
# Popen handles of the nodes this process launched; polling them also reaps exited ones (no zombies).
_CHILDREN: dict[int, Popen[bytes]] = {}


def fetch_kafka_jars(cache_dir: Path | None = None, version: str = KAFKA_VERSION) -> Path:
    """`<cache_dir>/kafka-<version>/libs` with the broker jars (cache_dir: $MMRAG_CACHE_DIR or ~/.cache/kafka-mmrag).

    Runs Maven only until it once succeeds; RuntimeError if `mvn` is missing or fails (no Maven Central, proxy)."""
    cache = cache_dir or project_cache_dir()
    root = cache / f"kafka-{version}"
    libs = root / "libs"
    if (root / _MARKER).exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven ('mvn') is not on PATH: install it (e.g. apt-get install maven) to fetch Kafka jars")
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers must not run Maven into the same dir at once
        if (root / _MARKER).exists():
            return libs
        (root / "pom.xml").write_text(_POM.format(version=version, log4j=LOG4J_VERSION))
        shutil.rmtree(libs, ignore_errors=True)  # never mix jars of an interrupted run into a new one
        print(f"fetching Kafka {version} jars with Maven into {libs} ...", file=sys.stderr)
        started = time.monotonic()
        cmd = [mvn, "-q", "-B", "-Dstyle.color=never", "dependency:copy-dependencies", "-DoutputDirectory=libs"]
        proc = run(cmd, cwd=root, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            said = "\n".join(proc.stdout.replace("\x1b[0m", "").splitlines()[-30:]) + proc.stderr  # no colour codes
            raise RuntimeError(
                f"Maven could not fetch kafka_2.13:{version} (exit {proc.returncode}; pom in {root}). Check access to "
                f"Maven Central (https://repo.maven.apache.org) and proxy settings in ~/.m2/settings.xml:\n{said}"
            )
        (root / _MARKER).write_text(f"{version}\n")
        print(f"fetched {len(list(libs.glob('*.jar')))} jars in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return libs


@dataclass
class KafkaNode:
    """One combined broker+controller process; `pid` is None while it is not running."""

    node_id: int
    port: int
    controller_port: int
    dir: Path
    pid: int | None = None

    @property
    def properties_file(self) -> Path:
        return self.dir / "server.properties"

    def is_alive(self) -> bool:
        """True if `pid` runs and is this node's Kafka process (a reused pid or a zombie does not count)."""
        if self.pid in _CHILDREN:
            # Our own child is exact via waitpid; /proc shows an empty cmdline while its exec is still underway.
            return _CHILDREN[self.pid].poll() is None
        if self.pid is None:
            return False
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z" and str(self.properties_file) in cmdline


def _terminate(nodes: list[KafkaNode], sig: signal.Signals, timeout_s: float) -> None:
    """Send `sig` to each live node's process group (it leads its own session); wait up to `timeout_s` for all."""
    for node in nodes:
        if node.is_alive() and node.pid:
            with suppress(ProcessLookupError):
                os.killpg(node.pid, sig)
    deadline = time.monotonic() + timeout_s
    while any(node.is_alive() for node in nodes) and time.monotonic() < deadline:
        time.sleep(0.1)
    for node in nodes:  # forget the pids of the dead: the kernel may hand them to someone else
        node.pid = node.pid if node.is_alive() else None


@dataclass
class KafkaCluster:
    """A local KRaft cluster whose nodes are background processes, described by `<base_dir>/cluster.json`."""

    bootstrap_servers: str
    base_dir: Path
    cluster_id: str
    libs: Path
    heap_mb: int
    nodes: list[KafkaNode]
    secure: bool = False  # SASL_SSL + ACLs (local_stack.secure_kafka), files under <base_dir>/security

    @property
    def security(self) -> SecurityFiles | None:
        return SecurityFiles(self.base_dir / "security") if self.secure else None

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings an admin client of this cluster needs besides its bootstrap servers."""
        return self.security.client_config() if self.security else {}

    def listeners(self, node: KafkaNode) -> str:
        if self.security:
            return self.security.listener_properties(node.port, node.controller_port)
        return _PLAIN_LISTENERS.format(port=node.port, controller_port=node.controller_port)

    def node(self, node_id: int) -> KafkaNode:
        """The node with `node_id`; KeyError if there is none."""
        return {node.node_id: node for node in self.nodes}[node_id]

    def is_running(self) -> bool:
        """True if every node's process is alive."""
        return all(node.is_alive() for node in self.nodes)

    def save(self) -> None:
        """Write cluster.json atomically, so a concurrent reader never sees half a file."""
        tmp = self.base_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str) + "\n")
        os.replace(tmp, self.base_dir / STATE_FILE)

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM every live node (controlled shutdown), SIGKILL those still alive after `timeout_s`, save state."""
        _terminate(self.nodes, signal.SIGTERM, timeout_s)
        _terminate(self.nodes, signal.SIGKILL, 10)  # only those that ignored SIGTERM are still alive
        self.save()

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node (a crash, for fault tests) and wait until it is gone; KeyError for an unknown id."""
        node = self.node(node_id)
        _terminate([node], signal.SIGKILL, 10)
        self.save()

    def start_node(self, node_id: int, ready_timeout_s: float = 60) -> None:
        """(Re)start one node, e.g. after `kill_node`, and wait until it serves; RuntimeError if it does not."""
        node = self.node(node_id)
        if not node.is_alive():
            _launch(self, node)
            self.save()
        _wait_ready(self, [node], ready_timeout_s)


def load_cluster(base_dir: Path) -> KafkaCluster | None:
    """Read `<base_dir>/cluster.json`; None if there is none (ValueError/KeyError/TypeError if malformed)."""
    path = Path(base_dir) / STATE_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    nodes = [KafkaNode(**{**node, "dir": Path(node["dir"])}) for node in data["nodes"]]
    return KafkaCluster(**{**data, "base_dir": path.parent.resolve(), "libs": Path(data["libs"]), "nodes": nodes})


def stop_cluster(base_dir: Path, timeout_s: float = 20) -> bool:
    """Stop whatever cluster `<base_dir>/cluster.json` names; False (no error) if nothing was running."""
    cluster = load_cluster(base_dir)
    if cluster is None or not any(node.is_alive() for node in cluster.nodes):
        return False
    cluster.stop(timeout_s)
    return True


def new_cluster_id() -> str:
    """16 random bytes, urlsafe base64 without padding, never starting with '-' (the format tool's CLI would read
    such an id as an option; Kafka's own Uuid generator avoids it the same way)."""
    while True:
        candidate = secrets.token_urlsafe(16)
        if not candidate.startswith("-"):
            return candidate


def _plan_cluster(base_dir: Path, nodes: int, first_port: int | None, heap_mb: int) -> KafkaCluster:
    """Describe the cluster, reusing cluster id and ports of a previous run in `base_dir` so its data stays valid."""
    previous = load_cluster(base_dir)
    if previous is not None and any(node.is_alive() for node in previous.nodes):
        raise RuntimeError(f"a Kafka cluster from {base_dir} is already running: stop it first")
    if previous is not None and len(previous.nodes) != nodes:
        raise RuntimeError(f"{base_dir} holds a {len(previous.nodes)}-node cluster, not {nodes}: use another dir")
    if first_port is not None:  # broker ports first, then controller ports
        ports = [(first_port + i, first_port + nodes + i) for i in range(nodes)]
    elif previous is not None:
        ports = [(node.port, node.controller_port) for node in previous.nodes]
    else:  # distinct ports below the ephemeral range: a restarted node gets its port back
        free = [free_port() for _ in range(2 * nodes)]
        ports = [(free[2 * i], free[2 * i + 1]) for i in range(nodes)]
    members = [KafkaNode(i + 1, port, cport, base_dir / f"node-{i + 1}") for i, (port, cport) in enumerate(ports)]
    # 16 random bytes, urlsafe base64 unpadded: the format of `kafka-storage random-uuid`, without a JVM start.
    cluster_id = previous.cluster_id if previous else new_cluster_id()
    servers = ",".join(f"127.0.0.1:{node.port}" for node in members)
    return KafkaCluster(servers, base_dir, cluster_id, fetch_kafka_jars(), heap_mb, members)


def _java_cmd(cluster: KafkaCluster, node: KafkaNode, *args: str) -> list[str]:
    """`java` with the Kafka classpath and log4j config, then `args`; RuntimeError if no `java` is on PATH."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("'java' is not on PATH: Kafka 4 needs Java 17+ (e.g. apt-get install openjdk-17-jre)")
    return [java, "-cp", f"{cluster.libs}/*", f"-Dlog4j2.configurationFile={node.dir / 'log4j2.properties'}", *args]


def _format_storage(cluster: KafkaCluster) -> None:
    """Format each node's log dir with the cluster id (in parallel); RuntimeError with the tool's output on failure."""
    jobs = []
    for node in cluster.nodes:
        if (node.dir / "data" / "meta.properties").exists():
            continue  # formatted by an earlier run: -g would keep it too, this just skips a ~1 s JVM start
        args = ["kafka.tools.StorageTool", "format", "-t", cluster.cluster_id, "-c", str(node.properties_file), "-g"]
        args += cluster.security.format_args() if cluster.security else []
        jobs.append((node, Popen(_java_cmd(cluster, node, *args), stdout=PIPE, stderr=PIPE)))
    for node, proc in jobs:
        output = b"".join(proc.communicate(timeout=120)).decode(errors="replace")
        if proc.returncode != 0:
            tail = "\n".join(output.splitlines()[-30:])
            raise RuntimeError(f"formatting storage of Kafka node {node.node_id} failed ({proc.returncode}):\n{tail}")


def _launch(cluster: KafkaCluster, node: KafkaNode) -> None:
    cmd = _java_cmd(cluster, node, f"-Xmx{cluster.heap_mb}m", "kafka.Kafka", str(node.properties_file))
    with suppress(FileNotFoundError):  # keep the previous run's log for post-mortems; this run's starts empty
        (node.dir / "server.log").replace(node.dir / "server.log.1")
    # Own session: the broker outlives the launching command and can be signalled as one process group.
    with (node.dir / "stdout.log").open("wb") as out:
        proc = Popen(cmd, cwd=node.dir, stdin=DEVNULL, stdout=out, stderr=out, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    node.pid = proc.pid


def _log_tail(node: KafkaNode) -> str:
    """`; <path>:` then its first ERROR (usually the cause), `...` and its last lines, for server.log and stdout.log."""
    text = ""
    # stdout.log holds what log4j never sees: JVM failures such as a bad classpath or OutOfMemoryError.
    for path, count in ((node.dir / "server.log", 20), (node.dir / "stdout.log", 10)):
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        first = next((i for i, line in enumerate(lines) if " ERROR " in line), len(lines))
        text += f"; {path}:\n" + "\n".join([*lines[first : first + 2], "...", *lines[-count:]])
    return text


def _answers_metadata(node: KafkaNode, brokers: int, client: dict[str, Any]) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", node.port), timeout=0.5):
            pass  # cheap probe first: no Kafka client is built while the port is still closed
    except OSError:
        return False
    try:  # log_level 0: errors while it boots are expected, list_topics alone decides
        config = {"bootstrap.servers": f"127.0.0.1:{node.port}", "log_level": 0, **client}
        metadata = AdminClient(config).list_topics(timeout=2)
    except KafkaException:
        return False
    # After a restart a broker serves metadata a moment before the partitions it hosts have their leaders back.
    mine = [p for topic in metadata.topics.values() for p in topic.partitions.values() if node.node_id in p.replicas]
    return len(metadata.brokers) >= brokers and all(p.leader >= 0 for p in mine)


def _wait_ready(cluster: KafkaCluster, nodes: list[KafkaNode], timeout_s: float) -> None:
    """Block until each of `nodes` lists all live brokers and partition leaders; RuntimeError (log tail) if it fails."""
    deadline = time.monotonic() + timeout_s
    pending = list(nodes)
    while pending:
        for node in nodes:
            if not node.is_alive():
                code = _CHILDREN[node.pid].returncode if node.pid in _CHILDREN else "?"
                raise RuntimeError(f"Kafka node {node.node_id} exited (code {code}) during start-up{_log_tail(node)}")
        live = sum(1 for node in cluster.nodes if node.is_alive())
        pending = [node for node in pending if not _answers_metadata(node, live, cluster.client_config())]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"Kafka node {pending[0].node_id} not ready in {timeout_s:.0f}s{_log_tail(pending[0])}")
        if pending:
            time.sleep(0.2)


def start_cluster(
    base_dir: Path,
    nodes: int = 1,
    *,
    first_port: int | None = None,
    heap_mb: int | None = None,
    ready_timeout_s: float = 60,
    secure: bool = False,
) -> KafkaCluster:
    """Start an n-node KRaft cluster (each node broker+controller) under `base_dir`, keeping earlier data there.

    RuntimeError if jars or java are missing, or a node dies or is not ready in `ready_timeout_s` (all stop)."""
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    previous = load_cluster(base_dir)
    if previous is not None and previous.secure != secure:  # the admin's SCRAM user is written at format time only
        made = "secured" if previous.secure else "plaintext"
        raise RuntimeError(f"the Kafka data in {base_dir} was made {made} -> remove it or use another state dir")
    cluster = _plan_cluster(Path(base_dir).resolve(), nodes, first_port, heap_mb or (512 if nodes == 1 else 320))
    cluster.secure = secure
    if cluster.security:
        cluster.security.ensure(users=[])
    rf = min(3, nodes)  # replication factor of the internal topics and the default one
    isr = 2 if rf >= 3 else 1  # with 3 replicas an acked write survives the loss of any one node
    voters = ",".join(f"{node.node_id}@127.0.0.1:{node.controller_port}" for node in cluster.nodes)
    for node in cluster.nodes:
        node.dir.mkdir(parents=True, exist_ok=True)
        listeners = cluster.listeners(node)
        properties = _SERVER_PROPERTIES.format(node=node, voters=voters, rf=rf, isr=isr, listeners=listeners)
        write_private(node.properties_file, properties.encode())  # holds the admin's password when secured
        (node.dir / "log4j2.properties").write_text(_LOG4J2.format(log=node.dir / "server.log"))
    _format_storage(cluster)
    try:
        for node in cluster.nodes:
            _launch(cluster, node)
        cluster.save()
        _wait_ready(cluster, cluster.nodes, ready_timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _run_command(args: argparse.Namespace) -> int:
    """Run `fetch|start|stop|status` from parsed args; expected failures print one line on stderr and return 1."""
    try:
        if args.kafka_command == "fetch":
            print(fetch_kafka_jars(args.cache_dir, args.version))
        elif args.kafka_command == "start":
            fetch_kafka_jars()  # a one-off download is not broker start-up: keep it out of the time printed below
            started = time.monotonic()
            ready = start_cluster(args.dir, args.nodes, heap_mb=args.heap_mb, ready_timeout_s=args.timeout)
            print(f"Kafka ready at {ready.bootstrap_servers} in {time.monotonic() - started:.1f}s ({args.dir})")
        elif args.kafka_command == "stop":
            print("stopped" if stop_cluster(args.dir) else f"no Kafka cluster running from {args.dir}")
        elif (cluster := load_cluster(args.dir)) is None:
            print(f"no Kafka cluster in {args.dir}")
            return 1
        else:
            print(f"bootstrap servers: {cluster.bootstrap_servers}")
            for node in cluster.nodes:
                state = f"alive (pid {node.pid})" if node.is_alive() else "not running"
                print(f"node {node.node_id} 127.0.0.1:{node.port}: {state}")
            return 0 if cluster.is_running() else 1
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def register_cli(parser: argparse.ArgumentParser) -> None:
    """Add the fetch/start/stop/status subcommands to `parser`; each sets `func(args) -> exit code`."""
    sub = parser.add_subparsers(dest="kafka_command", required=True)
    fetch = sub.add_parser("fetch", help="download the Kafka broker jars with Maven (once)")
    fetch.add_argument("--cache-dir", type=Path, default=None, help="default: $MMRAG_CACHE_DIR or ~/.cache/kafka-mmrag")
    fetch.add_argument("--version", default=KAFKA_VERSION)
    start = sub.add_parser("start", help="start a local KRaft cluster that keeps running in the background")
    start.add_argument("--nodes", type=int, default=1, help="1 (default), or 3 for replication factor 3")
    start.add_argument("--heap-mb", type=int, default=None, help="JVM heap per node (default 512, 320 if >1 node)")
    start.add_argument("--timeout", type=float, default=60, help="seconds to wait until ready (default 60)")
    stop = sub.add_parser("stop", help="stop the cluster named by <dir>/cluster.json")
    status = sub.add_parser("status", help="bootstrap servers and node liveness (exit 1 unless all alive)")
    state_dir = Path(os.environ.get("MMRAG_STATE_DIR", ".mmrag")) / "kafka"
    for command in (start, stop, status):
        command.add_argument("--dir", type=Path, default=state_dir, help="$MMRAG_STATE_DIR/kafka, ./.mmrag/kafka")
    for command in (fetch, start, stop, status):
        command.set_defaults(func=_run_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m local_stack.kafka_broker`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m local_stack.kafka_broker", description=__doc__)
    register_cli(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
