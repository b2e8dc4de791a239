"""Order's SQL that repeats a list of the domain's: the partial index of the unsettled orders and
the in-flight count that reads through it (ADR 69) name the statuses of domain.UNSETTLED, all of
them and no other, so the count uses the index and counts every saga in flight."""

from __future__ import annotations

import re
from importlib import resources

from tinysaga.order import domain


def migration(name: str) -> str:
    return (resources.files("tinysaga.order") / "migrations" / name).read_text()


def statuses_in(sql: str) -> list[list[str]]:
    """Each `order_status IN (...)` list of `sql`, in order."""
    return [re.findall(r"'([A-Z_]+)'", group) for group in re.findall(r"order_status IN \(([^)]*)\)", sql)]


UNSETTLED = sorted(s.value for s in domain.UNSETTLED)


def test_the_unsettled_index_predicate_is_the_domains_unsettled_statuses() -> None:
    assert [sorted(group) for group in statuses_in(migration("0004_unsettled.sql"))] == [UNSETTLED]


def test_the_in_flight_count_reads_the_domains_unsettled_statuses_and_never_scans_the_table() -> None:
    sql = migration("0008_in_flight_count.sql")
    assert [sorted(group) for group in statuses_in(sql)] == [UNSETTLED]
    assert re.search(r"^\s*SET enable_seqscan = off$", sql, re.MULTILINE)
