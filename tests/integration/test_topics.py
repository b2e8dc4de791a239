"""The services create the saga's topics on the real broker, and start their consumers only once
every topic exists: a refusal by the controller (a replication factor more nodes than have
registered) is an error to retry, not a success."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.support import run_sync
from tinysaga.platform.service import TopicsNotCreated, ensure_topics
from tinysaga.platform.settings import Settings


def _own_topics(settings: Settings, **update: object) -> Settings:
    tag = uuid.uuid4().hex[:12]
    names = {f: f"{f}-{tag}" for f in ("topic", "user_topic", "dead_letter_topic", "commands_topic")}
    return settings.model_copy(update={**names, **update})


async def _topics(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _delete(settings: Settings, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


def test_a_replication_factor_the_cluster_cannot_hold_is_an_error(gateway: str, settings: Settings) -> None:
    # three replicas asked of this one-node cluster: the controller answers INVALID_REPLICATION_FACTOR
    s = _own_topics(settings, kafka_nodes=3, kafka_bootstrap_servers=settings.kafka_bootstrap)
    assert s.replication_factor > settings.kafka_nodes
    with pytest.raises(TopicsNotCreated, match="InvalidReplicationFactor"):
        run_sync(ensure_topics(s))
    assert s.topic not in run_sync(_topics(settings))


def test_the_topics_are_created_once_and_a_second_call_changes_nothing(gateway: str, settings: Settings) -> None:
    s = _own_topics(settings)
    mine = [s.topic, s.user_topic, s.dead_letter_topic, s.commands_topic]
    try:
        run_sync(ensure_topics(s))
        assert set(mine) <= run_sync(_topics(settings))
        run_sync(ensure_topics(s))  # they exist: nothing to create, nothing raised
    finally:
        run_sync(_delete(settings, mine))
