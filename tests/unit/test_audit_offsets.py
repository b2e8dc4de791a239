"""The audit's reading of the groups' committed offsets asks again when Kafka answers that it
should (a coordinator still loading its groups' offsets after a node started), gives up on an
error that asking again will not cure, and reads the stack's own groups even when the brokers'
listing leaves them out."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, GroupLoadInProgressError
from aiokafka.structs import OffsetAndMetadata

from tinysaga.contracts import saga
from tinysaga.ops.audit import _committed


class Admin:
    """Answers as Kafka's admin API does, after failing the first `failures` listings."""

    def __init__(self, failures: list[Exception], listed: tuple[str, ...] = ("payment", "audit-probe")) -> None:
        self.failures = failures
        self.listed = listed
        self.listings = 0

    async def list_consumer_groups(self) -> list[tuple[str, str]]:
        self.listings += 1
        if self.failures:
            raise self.failures.pop(0)
        return [(g, "consumer") for g in self.listed]

    async def list_consumer_group_offsets(self, group: str) -> dict[TopicPartition, Any]:
        if group == "never-committed":  # a group Kafka does not know answers nothing committed
            return {TopicPartition("order-topic", 0): OffsetAndMetadata(-1, "")}
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


async def test_a_group_of_the_stack_that_the_listing_leaves_out_is_read_all_the_same() -> None:
    """After a node restarts, its coordinator lists none of the groups it is still loading: a group
    read only from the listing would look caught up, and the stack at rest while it is not."""
    admin = Admin([], listed=("inventory",))
    committed = await _committed(admin, {"order-topic"}, ("payment", "inventory", "never-committed"))
    assert committed == {
        ("payment", TopicPartition("order-topic", 0)): 7,
        ("inventory", TopicPartition("order-topic", 0)): 3,
    }


def test_the_stacks_groups_are_every_participants_and_notifications_contacts() -> None:
    for mode in (saga.CHOREOGRAPHY, saga.ORCHESTRATION):
        groups = saga.consumer_groups(mode)
        assert set(groups) == {"order", "payment", "inventory", "notification", "wallet", saga.CONTACTS_GROUP}
