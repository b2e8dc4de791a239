"""The operators' custom resources in deploy/k8s (Strimzi's Kafka, KafkaNodePool, KafkaTopic;
CloudNativePG's Cluster, Database) against the CRDs those operators publish at the pinned
versions (fetched and checksummed by tinysaga.infra.k8s_tools).

The API server validates a custom resource with its CRD's OpenAPI v3 schema and, with the strict
field validation kubectl asks for, refuses fields the schema does not declare (unless the schema
keeps unknown fields, `x-kubernetes-preserve-unknown-fields`). The same is done here with
jsonschema, unknown fields refused the same way."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.k8s_support import OVERLAYS, built, one
from tinysaga.infra import k8s_tools
from tinysaga.platform.settings import get_settings

OPERATOR_GROUPS = ("kafka.strimzi.io", "postgresql.cnpg.io")


def _strict(node: Any) -> Any:
    """The schema with unknown fields refused where the API server would refuse them."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> the strict schema, from every CRD file fetched."""
    out = {}
    for folder in k8s_tools.crd_dirs(get_settings()):
        for path in sorted(folder.rglob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            assert crd["kind"] == "CustomResourceDefinition", path
            for version in crd["spec"]["versions"]:
                key = (crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"])
                out[key] = _strict(version["schema"]["openAPIV3Schema"])
    return out


def errors(resource: dict[str, Any]) -> list[str]:
    group, version = resource["apiVersion"].split("/")
    schema = schemas().get((group, version, resource["kind"]))
    assert schema is not None, f"no CRD for {resource['apiVersion']} {resource['kind']} among the fetched ones"
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(resource)]


def custom_resources(overlay: str) -> list[dict[str, Any]]:
    return [d for d in built(overlay) if d["apiVersion"].split("/")[0] in OPERATOR_GROUPS]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_custom_resource_matches_its_operators_crd(overlay: str) -> None:
    resources = custom_resources(overlay)
    kinds = sorted({r["kind"] for r in resources})
    assert kinds == ["Cluster", "Database", "Kafka", "KafkaNodePool", "KafkaTopic"]
    for r in resources:
        assert r["apiVersion"] in ("kafka.strimzi.io/v1", "postgresql.cnpg.io/v1"), r["apiVersion"]
        found = errors(r)
        assert not found, f"{r['kind']}/{r['metadata']['name']}: {found}"


@pytest.mark.parametrize(
    ("kind", "name", "path", "value", "why"),
    [
        ("KafkaTopic", "order-topic", ["spec", "replicas"], "three", "a string where the CRD wants an integer"),
        ("KafkaTopic", "order-topic", ["spec", "replica"], 3, "a field the CRD does not have"),
        ("KafkaNodePool", "dual-role", ["spec", "roles"], ["leader"], "a role that is not in the enum"),
        ("Kafka", "tinysaga", ["spec", "kafka", "listeners", 0, "tls"], None, "a required field removed"),
        ("Cluster", "tinysaga-pg", ["spec", "instance"], 3, "a misspelt field"),
        ("Cluster", "tinysaga-pg", ["spec", "managed", "roles", 0, "login"], "yes", "a string for a boolean"),
        ("Database", "tinysaga-order", ["spec", "owner"], None, "a required field removed"),
    ],
)
def test_the_check_refuses_a_broken_resource(kind: str, name: str, path: list, value: Any, why: str) -> None:
    resource = copy.deepcopy(one("small", kind, name))
    node = resource
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    assert errors(resource), f"not caught: {why}"
