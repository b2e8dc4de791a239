"""The audit's reading of the groups' committed offsets asks again when Kafka answers that it
should (a coordinator still loading its groups' offsets after a node started), and gives up on
an error that asking again will not cure."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, GroupLoadInProgressError
from aiokafka.structs import OffsetAndMetadata

from tinysaga.ops.audit import _committed


class Admin:
    """Answers as Kafka's admin API does, after failing the first `failures` listings."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.listings = 0

    async def list_consumer_groups(self) -> list[tuple[str, str]]:
        self.listings += 1
        if self.failures:
            raise self.failures.pop(0)
        return [("payment", "consumer"), ("audit-probe", "consumer")]

    async def list_consumer_group_offsets(self, group: str) -> dict[TopicPartition, Any]:
        return {
            TopicPartition("order-topic", 0): OffsetAndMetadata(7 if group == "payment" else 3, ""),
            TopicPartition("other-topic", 0): OffsetAndMetadata(1, ""),
        }


async def test_a_coordinator_still_loading_is_asked_again() -> None:
    admin = Admin([GroupLoadInProgressError(), GroupLoadInProgressError()])
    committed = await _committed(admin, {"order-topic"})
    assert admin.listings == 3
    assert committed == {
        ("payment", TopicPartition("order-topic", 0)): 7,
        ("audit-probe", TopicPartition("order-topic", 0)): 3,
    }


async def test_an_error_that_asking_again_will_not_cure_is_raised() -> None:
    admin = Admin([GroupAuthorizationFailedError()])
    with pytest.raises(GroupAuthorizationFailedError):
        await _committed(admin, {"order-topic"})
    assert admin.listings == 1
