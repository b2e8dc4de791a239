"""The broker's set-up values: its cluster id, and the config of one node or of a three-node cluster."""

from __future__ import annotations

import base64
import re

import pytest
from pydantic import ValidationError

from tinysaga.infra import kafka
from tinysaga.platform.settings import SERVICE_PORT_OFFSETS, Settings


def test_cluster_ids_are_kafka_uuids_that_the_storage_tool_cannot_take_for_an_option() -> None:
    ids = {kafka._cluster_id() for _ in range(3000)}  # about 1 in 64 random ids starts with '-'
    assert len(ids) == 3000
    for cid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid) and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_one_node_keeps_replication_one_and_its_port(monkeypatch) -> None:
    monkeypatch.delenv("TINYSAGA_KAFKA_NODES", raising=False)
    s = Settings(kafka_port=9092, kafka_controller_port=9093)
    p = _props(kafka.render_config(s, 1))
    assert p["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert p["default.replication.factor"] == p["min.insync.replicas"] == "1"
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert [kafka.node_name(s, i) for i in kafka.node_ids(s)] == ["kafka"]


def test_three_nodes_form_one_quorum_with_replication_three_and_min_isr_two() -> None:
    s = Settings(kafka_nodes=3, kafka_port=29092, kafka_controller_port=29093)
    configs = [_props(kafka.render_config(s, i)) for i in (1, 2, 3)]
    voters = "1@127.0.0.1:29093,2@127.0.0.1:29103,3@127.0.0.1:29113"
    for i, p in enumerate(configs, start=1):
        assert p["node.id"] == str(i)
        assert p["controller.quorum.voters"] == voters
        assert p["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{29092 + 10 * (i - 1)}"
        assert p["default.replication.factor"] == p["offsets.topic.replication.factor"] == "3"
        assert p["min.insync.replicas"] == p["transaction.state.log.min.isr"] == "2"
        assert p["unclean.leader.election.enable"] == "false"
    assert len({p["log.dirs"] for p in configs}) == 3
    assert s.kafka_bootstrap == "127.0.0.1:29092,127.0.0.1:29102,127.0.0.1:29112"
    assert [kafka.node_name(s, i) for i in kafka.node_ids(s)] == ["kafka-1", "kafka-2", "kafka-3"]
    assert (s.replication_factor, s.min_insync_replicas) == (3, 2)


def test_a_chaos_stack_advertises_the_fault_proxies_to_the_services() -> None:
    s = Settings(
        kafka_nodes=3, kafka_port=29092, kafka_controller_port=29093, fault_proxy=True, service_port_base=28100
    )
    p = _props(kafka.render_config(s, 2))
    assert "CLIENT://127.0.0.1:29107" in p["listeners"].split(",")
    assert p["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:29102,CLIENT://127.0.0.1:{kafka.proxy_port(s, 2)}"
    assert kafka.proxy_port(s, 2) == 28100 + SERVICE_PORT_OFFSETS["proxy-kafka"] + 1


def test_kafka_nodes_is_one_or_three() -> None:
    with pytest.raises(ValidationError):
        Settings(kafka_nodes=2)
