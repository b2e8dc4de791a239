"""What the test suite needs to check `deploy/k8s/` without a cluster: Kustomize, built from its Go
module (pinned version, `go install` into the cache), and the CustomResourceDefinitions that the
Strimzi and CloudNativePG operators publish with their releases, fetched once into the cache and
checked against `deploy/k8s/crds.sha256` (like Kafka's jars):

- Strimzi: the CRDs its build generates ship in `io.strimzi:api:<version>:jar:tests` on Maven
  Central (`crds/v1/*.yaml`, one file per resource, the `kafka.strimzi.io/v1` API), fetched with
  Maven as Kafka is;
- CloudNativePG: a Go module; its released module zip holds `config/crd/bases/*.yaml`, fetched with
  `go mod download` (which also checks it against Go's checksum database)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

from tinysaga.infra.postgres import SetupError
from tinysaga.platform.settings import REPO_ROOT, Settings

K8S_DIR = REPO_ROOT / "deploy" / "k8s"
CHECKSUMS = K8S_DIR / "crds.sha256"

KUBERNETES_VERSION = "1.33.0"  # the API the manifests are validated against (kubernetes-validate)
KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_VERSION = "v5.8.1"
STRIMZI_VERSION = "0.51.0"
STRIMZI_ARTIFACT = f"io.strimzi:api:{STRIMZI_VERSION}:jar:tests"
STRIMZI_KAFKA_VERSIONS = ("4.1.0", "4.1.1", "4.2.0")  # what Strimzi 0.51.0 runs (its release notes)
CNPG_MODULE = "github.com/cloudnative-pg/cloudnative-pg"
CNPG_VERSION = "v1.28.0"


def _go_env(settings: Settings) -> dict[str, str]:
    """Go's downloads stay in the project's cache, writable (so that a reset can delete them)."""
    return {
        **os.environ,
        "GOMODCACHE": str(settings.cache / "go" / "mod"),
        "GOFLAGS": " ".join(f for f in (os.environ.get("GOFLAGS", ""), "-modcacherw") if f),
        "GOTOOLCHAIN": "local",
    }


def _go() -> str:
    go = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(p, os.X_OK)), None
    )
    if not go:
        raise SetupError("Go is missing (needed to build Kustomize and fetch CloudNativePG's CRDs): install Go 1.22+")
    return go


def kustomize(settings: Settings) -> Path:
    """The pinned kustomize binary, built with `go install` on first use (about a minute)."""
    folder = settings.cache / "k8s-tools" / f"kustomize-{KUSTOMIZE_VERSION}"
    binary = folder / "kustomize"
    if binary.exists() and KUSTOMIZE_VERSION in _run([str(binary), "version"]).strip():
        return binary
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"  building kustomize {KUSTOMIZE_VERSION} with go install ...", flush=True)
    r = subprocess.run(
        [_go(), "install", "-p", "1", f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"],
        env={**_go_env(settings), "GOBIN": str(tmp), "CGO_ENABLED": "0"},
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SetupError(f"go install {KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return binary


def _run(argv: list[str]) -> str:
    r = subprocess.run(argv, capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


def kustomize_build(settings: Settings, path: Path) -> str:
    r = subprocess.run([str(kustomize(settings)), "build", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SetupError(f"kustomize build {path} failed:\n{r.stderr.strip()}")
    return r.stdout


# ---- CRDs -----------------------------------------------------------------------------------------


def expected_sums() -> dict[str, str]:
    """`deploy/k8s/crds.sha256`: "<sha256>  <path>" with paths under `strimzi-<v>/` and
    `cloudnative-pg-<v>/`: each fetched artifact and each CRD file taken from it."""
    out = {}
    for line in CHECKSUMS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split()
            out[name] = digest
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check(name: str, data: bytes, expected: dict[str, str]) -> None:
    if name not in expected:
        raise SetupError(f"{name} has no checksum in {CHECKSUMS.name}")
    actual = _sha256(data)
    if actual != expected[name]:
        raise SetupError(f"checksum mismatch for {name}: expected {expected[name]}, got {actual}")


def _extract(archive: Path, prefix: str, inner: str, dest: Path, expected: dict[str, str]) -> None:
    """Every file `expected` lists under `prefix/` from the archive's folder `inner`, checked."""
    wanted = {name[len(prefix) + 1 :] for name in expected if name.startswith(prefix + "/")}
    wanted.discard(archive.name)
    if not wanted:
        raise SetupError(f"{CHECKSUMS.name} lists no CRD file for {prefix}")
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        for rel in sorted(wanted):
            member = f"{inner}/{rel}"
            if member not in names:
                raise SetupError(f"{archive.name} has no {member}")
            data = z.read(member)
            _check(f"{prefix}/{rel}", data, expected)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(data)


def _fetch_strimzi(settings: Settings, dest: Path, expected: dict[str, str]) -> None:
    prefix = dest.name
    tmp = dest.with_name(dest.name + ".download")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"  fetching Strimzi {STRIMZI_VERSION}'s CRDs from Maven Central ...", flush=True)
    r = subprocess.run(
        ["mvn", "-B", "-q", "-C", "dependency:copy", f"-Dartifact={STRIMZI_ARTIFACT}", f"-DoutputDirectory={tmp}"],
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    jar = tmp / f"api-{STRIMZI_VERSION}-tests.jar"
    if r.returncode != 0 or not jar.exists():
        raise SetupError(f"Maven could not fetch {STRIMZI_ARTIFACT}:\n{(r.stdout + r.stderr)[-3000:]}")
    _check(f"{prefix}/{jar.name}", jar.read_bytes(), expected)
    _extract(jar, prefix, "crds", dest, expected)
    shutil.rmtree(tmp, ignore_errors=True)


def _fetch_cnpg(settings: Settings, dest: Path, expected: dict[str, str]) -> None:
    prefix = dest.name
    print(f"  fetching CloudNativePG {CNPG_VERSION}'s CRDs (Go module) ...", flush=True)
    r = subprocess.run(
        [_go(), "mod", "download", "-json", f"{CNPG_MODULE}@{CNPG_VERSION}"],
        env=_go_env(settings),
        capture_output=True,
        text=True,
        cwd=settings.cache,
    )
    try:
        info = json.loads(r.stdout)
    except ValueError:
        info = {}
    if r.returncode != 0 or "Zip" not in info:
        raise SetupError(f"go mod download {CNPG_MODULE}@{CNPG_VERSION} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    zip_path = Path(info["Zip"])
    _check(f"{prefix}/{CNPG_VERSION}.zip", zip_path.read_bytes(), expected)
    _extract(zip_path, prefix, f"{CNPG_MODULE}@{CNPG_VERSION}/config/crd/bases", dest, expected)


def crd_dirs(settings: Settings) -> list[Path]:
    """The folders of checked CRD files, fetched on first use; a folder is used only once every
    file in it passed its checksum (a `verified` marker written last)."""
    expected = expected_sums()
    root = settings.cache / "k8s-crds"
    out = []
    for name, fetch in (
        (f"strimzi-{STRIMZI_VERSION}", _fetch_strimzi),
        (f"cloudnative-pg-{CNPG_VERSION}", _fetch_cnpg),
    ):
        dest = root / name
        if not (dest / "verified").exists():
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            fetch(settings, dest, expected)
            (dest / "verified").write_text("ok\n")
        out.append(dest)
    return out


def verify_cached(settings: Settings) -> None:
    """Check again every cached CRD file against the committed list (a cache can be tampered with)."""
    expected = expected_sums()
    for folder in crd_dirs(settings):
        for f in sorted(folder.rglob("*.yaml")):
            _check(f"{folder.name}/{f.relative_to(folder)}", f.read_bytes(), expected)
