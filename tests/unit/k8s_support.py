"""What the deploy/k8s tests share: the overlays built once with the pinned kustomize, the objects
looked up by kind and name, and the local topology's defaults (no TINYSAGA_* of the caller)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tinysaga.infra import k8s_tools
from tinysaga.platform.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("small", "ha")


def local_defaults() -> Settings:
    """The settings of the local topology: the defaults, whatever the environment says."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("TINYSAGA_")}
    try:
        return Settings()
    finally:
        os.environ.update(saved)


@cache
def built(overlay: str) -> tuple[dict[str, Any], ...]:
    """`kustomize build deploy/k8s/overlays/<overlay>`, parsed. A missing Go or an unreachable module
    proxy fails here with what is missing (a test that cannot build the manifests fails)."""
    text = k8s_tools.kustomize_build(get_settings(), K8S / "overlays" / overlay)
    return tuple(d for d in yaml.safe_load_all(text) if d)


def objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [copy.deepcopy(d) for d in built(overlay) if d["kind"] == kind]


def one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    found = [d for d in objects(overlay, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def containers(deployment: dict[str, Any], init: bool = False) -> list[dict[str, Any]]:
    spec = pod_spec(deployment)
    return spec["containers"] + (spec.get("initContainers", []) if init else [])


def env_of(overlay: str, container: dict[str, Any]) -> dict[str, str]:
    """The TINYSAGA_* environment of a container: its ConfigMaps, then its own `env` (values, or
    `secret:<name>/<key>` for a Secret's)."""
    out: dict[str, str] = {}
    for src in container.get("envFrom", []):
        out.update(one(overlay, "ConfigMap", src["configMapRef"]["name"])["data"])
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        out[e["name"]] = f"secret:{ref['name']}/{ref['key']}" if ref else e["value"]
    return out


def secrets_referenced(deployment: dict[str, Any]) -> set[str]:
    spec = pod_spec(deployment)
    names = set()
    for v in spec.get("volumes", []):
        if "secret" in v:
            names.add(v["secret"]["secretName"])
        for src in v.get("projected", {}).get("sources", []):
            if "secret" in src:
                names.add(src["secret"]["name"])
    for c in containers(deployment, init=True):
        for e in c.get("env", []):
            if "secretKeyRef" in e.get("valueFrom", {}):
                names.add(e["valueFrom"]["secretKeyRef"]["name"])
    return names


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)
