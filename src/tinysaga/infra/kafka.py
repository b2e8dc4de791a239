"""Apache Kafka 4 (KRaft) from Maven Central: fetched once into the cache with Maven, the version
pinned and every jar checked against a committed SHA-256 list; formatted and configured in the
state dir; run by the supervisor as `java ... kafka.Kafka server.properties`."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from pathlib import Path
from string import Template

from tinysaga.infra.postgres import SetupError
from tinysaga.platform.settings import REPO_ROOT, Settings

DEPLOY = REPO_ROOT / "deploy" / "kafka"


def libs_dir(settings: Settings) -> Path:
    return settings.cache / f"kafka-{settings.kafka_version}" / "libs"


def _expected_sums(version: str) -> dict[str, str]:
    f = DEPLOY / f"jars-{version}.sha256"
    if not f.exists():
        raise SetupError(f"no checksum list {f.name} for Kafka {version}: pin a version that has one")
    out = {}
    for line in f.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            out[name] = digest
    return out


def _verify(libs: Path, expected: dict[str, str]) -> None:
    for name, digest in expected.items():
        jar = libs / name
        if not jar.exists():
            raise SetupError(f"Kafka jar {name} is missing from {libs}")
        actual = hashlib.sha256(jar.read_bytes()).hexdigest()
        if actual != digest:
            raise SetupError(f"checksum mismatch for {name}: expected {digest}, got {actual}")


def ensure_installed(settings: Settings) -> Path:
    libs = libs_dir(settings)
    expected = _expected_sums(settings.kafka_version)
    marker = libs.parent / "verified"
    if marker.exists():
        return libs
    if not shutil.which("java"):
        raise SetupError("Java is missing: install a JDK 17+ (Debian: apt-get install openjdk-17-jdk-headless)")
    if not shutil.which("mvn"):
        raise SetupError("Maven is missing: install it (Debian: apt-get install maven)")
    tmp = libs.parent / "libs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"  fetching Apache Kafka {settings.kafka_version} from Maven Central ...", flush=True)
    r = subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "-C",
            "-f",
            str(DEPLOY / "pom.xml"),
            f"-Dkafka.version={settings.kafka_version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ],
        capture_output=True,
        text=True,
        cwd=libs.parent,
    )
    if r.returncode != 0:
        raise SetupError(
            "Maven could not fetch Kafka from Maven Central (is the registry reachable?):\n"
            + (r.stdout + r.stderr)[-3000:]
        )
    extra = {p.name for p in tmp.glob("*.jar")} - set(expected)
    if extra:
        raise SetupError(f"unexpected jars resolved for Kafka {settings.kafka_version}: {sorted(extra)}")
    _verify(tmp, expected)
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    marker.write_text("ok\n")
    return libs


def node_ids(settings: Settings) -> list[int]:
    return list(range(1, settings.kafka_nodes + 1))


def node_name(settings: Settings, node: int) -> str:
    """The process name: `kafka` for the one node, `kafka-1`..`kafka-3` in a cluster."""
    return "kafka" if settings.kafka_nodes == 1 else f"kafka-{node}"


def _node_dir(settings: Settings, node: int) -> Path:
    # one node keeps the layout it always had; a cluster has a folder per node
    return settings.home / "kafka" if settings.kafka_nodes == 1 else settings.home / "kafka" / f"node-{node}"


def data_dir(settings: Settings, node: int = 1) -> Path:
    return _node_dir(settings, node) / "data"


def config_path(settings: Settings, node: int = 1) -> Path:
    return _node_dir(settings, node) / "server.properties"


def client_listener_port(settings: Settings, node: int) -> int:
    """On a chaos stack, the node's listener for the services, reached through its fault proxy."""
    return settings.kafka_node_port(node) + 5


def proxy_port(settings: Settings, node: int) -> int:
    return settings.port_of("proxy-kafka", node)


def render_config(settings: Settings, node: int) -> str:
    """The node's server.properties: its listeners, the quorum of every node, the replication."""
    voters = ",".join(f"{i}@127.0.0.1:{settings.kafka_node_controller_port(i)}" for i in node_ids(settings))
    port, cport = settings.kafka_node_port(node), settings.kafka_node_controller_port(node)
    listeners = [f"PLAINTEXT://127.0.0.1:{port}", f"CONTROLLER://127.0.0.1:{cport}"]
    advertised = [f"PLAINTEXT://127.0.0.1:{port}"]
    if settings.fault_proxy:
        listeners.append(f"CLIENT://127.0.0.1:{client_listener_port(settings, node)}")
        advertised.append(f"CLIENT://127.0.0.1:{proxy_port(settings, node)}")
    return Template((DEPLOY / "server.properties.tmpl").read_text()).substitute(
        node_id=node,
        voters=voters,
        listeners=",".join(listeners),
        advertised=",".join(advertised),
        log_dirs=data_dir(settings, node),
        partitions=settings.topic_partitions,
        replication=settings.replication_factor,
        min_isr=settings.min_insync_replicas,
    )


def ensure_configured(settings: Settings) -> None:
    cid_file = settings.home / "kafka" / f"cluster-{settings.kafka_nodes}.id"
    cid_file.parent.mkdir(parents=True, exist_ok=True)
    if not cid_file.exists():  # every node of a cluster is formatted with the same id
        cid_file.write_text(_cluster_id())
    cluster_id = cid_file.read_text().strip()
    for node in node_ids(settings):
        cfg = config_path(settings, node)
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(render_config(settings, node))
        if (data_dir(settings, node) / "meta.properties").exists():
            continue
        r = subprocess.run(
            ["java", "-cp", f"{libs_dir(settings)}/*", "kafka.tools.StorageTool", "format", "-t", cluster_id]
            + ["-c", str(cfg)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise SetupError(f"formatting Kafka storage of node {node} failed:\n{r.stdout}{r.stderr}")


def _cluster_id() -> str:
    """A random cluster id in Kafka's form (URL-safe base64 of 16 bytes). One that starts with '-'
    would be read as an option by the storage tool (Kafka's own generator skips those too)."""
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def command(settings: Settings, node: int = 1) -> list[str]:
    heap = settings.kafka_heap_mb
    return [
        "java",
        f"-Xms{heap}m",
        f"-Xmx{heap}m",
        # A small heap on a 2-core box: the serial collector's young pauses are a few ms, and it has
        # none of G1's concurrent threads and periodic work (which cost CPU when the broker idles).
        "-XX:+UseSerialGC",
        # C1 only: C2 kept compiling for minutes after a start (a quarter of a core at 5 sagas/s);
        # measured on a fresh stack, the broker's CPU per saga halved at light load and fell at
        # 20 and 40/s too (ADR 9).
        "-XX:TieredStopAtLevel=1",
        "-XX:+ExitOnOutOfMemoryError",
        # the JVM samples its performance counters every 50 ms by default (20 wake-ups a second of
        # an idle broker); once a second is enough for jstat
        "-XX:PerfDataSamplingInterval=1000",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={DEPLOY / 'log4j2.properties'}",
        "-cp",
        f"{libs_dir(settings)}/*",
        "kafka.Kafka",
        str(config_path(settings, node)),
    ]


def active_controller(settings: Settings) -> int:
    """The node id of the active controller (leader of the KRaft quorum), asked with Kafka's own
    Admin client (`deploy/kafka/QuorumLeader.java`, run from source by the JDK)."""
    r = subprocess.run(
        [
            "java",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={DEPLOY / 'log4j2.properties'}",
            "-cp",
            f"{libs_dir(settings)}/*",
            str(DEPLOY / "QuorumLeader.java"),
            settings.kafka_bootstrap_direct,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for line in r.stdout.splitlines():
        if line.startswith("leader="):
            return int(line.split("=", 1)[1])
    raise RuntimeError(f"could not ask Kafka for its active controller: {r.stdout[-500:]}{r.stderr[-1500:]}")


async def partition_leaders(settings: Settings, topic: str | None = None) -> dict[int, int]:
    """How many partitions of the saga topic each node leads (node id -> count)."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_direct, request_timeout_ms=10000)
    await admin.start()
    try:
        out: dict[int, int] = {}
        for t in await admin.describe_topics([topic or settings.topic]):
            for p in t["partitions"]:
                if p["leader"] >= 0:
                    out[p["leader"]] = out.get(p["leader"], 0) + 1
        return out
    finally:
        await admin.close()
