"""The tools the deploy/k8s checks use, installed by the project itself: kustomize at its pinned
version (built with `go install` into the cache), and the operators' CRDs fetched from their
released packages and checked against deploy/k8s/crds.sha256."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tinysaga.infra import k8s_tools
from tinysaga.infra.postgres import SetupError
from tinysaga.platform.settings import Settings, get_settings


def test_kustomize_is_installed_at_the_pinned_version() -> None:
    binary = k8s_tools.kustomize(get_settings())
    out = subprocess.run([str(binary), "version"], capture_output=True, text=True, check=True).stdout
    assert k8s_tools.KUSTOMIZE_VERSION in out
    assert get_settings().cache in binary.parents


def test_the_checksum_list_names_each_fetched_artifact_and_the_crds_taken_from_it() -> None:
    sums = k8s_tools.expected_sums()
    strimzi, cnpg = f"strimzi-{k8s_tools.STRIMZI_VERSION}", f"cloudnative-pg-{k8s_tools.CNPG_VERSION}"
    assert f"{strimzi}/api-{k8s_tools.STRIMZI_VERSION}-tests.jar" in sums
    assert f"{cnpg}/{k8s_tools.CNPG_VERSION}.zip" in sums
    assert {f"{strimzi}/v1/043-Crd-kafkatopic.yaml", f"{cnpg}/postgresql.cnpg.io_clusters.yaml"} <= set(sums)
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in sums.values())


def test_the_cached_crds_are_the_checksummed_ones() -> None:
    dirs = k8s_tools.crd_dirs(get_settings())
    k8s_tools.verify_cached(get_settings())
    files = {f"{d.name}/{f.relative_to(d)}" for d in dirs for f in d.rglob("*.yaml")}
    assert files == {n for n in k8s_tools.expected_sums() if n.endswith(".yaml")}


def test_a_tampered_crd_in_the_cache_is_refused(tmp_path: Path) -> None:
    for d in k8s_tools.crd_dirs(get_settings()):
        shutil.copytree(d, tmp_path / "k8s-crds" / d.name)
    copy = Settings(cache=tmp_path)
    k8s_tools.verify_cached(copy)  # the copy is intact
    victim = next((tmp_path / "k8s-crds").rglob("*kafkatopic.yaml"))
    victim.write_text(victim.read_text().replace("replicas", "replicaz", 1))
    with pytest.raises(SetupError, match="checksum mismatch for strimzi-.*kafkatopic.yaml"):
        k8s_tools.verify_cached(copy)


def test_an_artifact_that_is_not_the_pinned_one_is_refused() -> None:
    sums = k8s_tools.expected_sums()
    name = f"cloudnative-pg-{k8s_tools.CNPG_VERSION}/{k8s_tools.CNPG_VERSION}.zip"
    with pytest.raises(SetupError, match="checksum mismatch"):
        k8s_tools._check(name, b"not the module zip", sums)
    with pytest.raises(SetupError, match="no checksum"):
        k8s_tools._check("strimzi-9.9.9/api.jar", b"", sums)
