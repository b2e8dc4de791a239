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


def data_dir(settings: Settings) -> Path:
    return settings.home / "kafka" / "data"


def config_path(settings: Settings) -> Path:
    return settings.home / "kafka" / "server.properties"


def ensure_configured(settings: Settings) -> None:
    cfg = config_path(settings)
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(
        Template((DEPLOY / "server.properties.tmpl").read_text()).substitute(
            port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            log_dirs=data_dir(settings),
            partitions=settings.topic_partitions,
        )
    )
    if (data_dir(settings) / "meta.properties").exists():
        return
    r = subprocess.run(
        [
            "java",
            "-cp",
            f"{libs_dir(settings)}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _cluster_id(),
            "-c",
            str(cfg),
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SetupError(f"formatting Kafka storage failed:\n{r.stdout}{r.stderr}")


def _cluster_id() -> str:
    """A random cluster id in Kafka's form (URL-safe base64 of 16 bytes). One that starts with '-'
    would be read as an option by the storage tool (Kafka's own generator skips those too)."""
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def command(settings: Settings) -> list[str]:
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
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={DEPLOY / 'log4j2.properties'}",
        "-cp",
        f"{libs_dir(settings)}/*",
        "kafka.Kafka",
        str(config_path(settings)),
    ]
