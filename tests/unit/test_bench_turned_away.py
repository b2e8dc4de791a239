"""The bench counts the orders turned away by the limit each answer names (`limit` in the
overloaded problem: the bound on sagas in flight, ADR 50, or the wait, ADR 52), so a report shows
which of the two did it."""

from __future__ import annotations

from bench import run as bench


def test_a_phase_with_orders_turned_away_shows_them_by_limit() -> None:
    assert bench.turned_away_cell({"turnedAway": 206, "turnedAwayBy": {"bound": 6, "wait": 200}}) == (
        "206 (bound 6, wait 200)"
    )


def test_a_phase_with_none_or_without_the_breakdown_shows_the_count() -> None:
    assert bench.turned_away_cell({"turnedAway": 0, "turnedAwayBy": {}}) == "0"
    assert bench.turned_away_cell({"turnedAway": 12}) == "12"  # a report from before the breakdown
