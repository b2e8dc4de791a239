"""The bench reads the host's speed (a fixed Python loop's least CPU time) before and after a run,
and the report says it: the machines of one kind differ, and one figure alone cannot tell a slow
host from slow code."""

from __future__ import annotations

import itertools

import pytest
from bench import run as bench


def test_the_speed_is_the_least_cpu_time_of_the_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    # each round's start and end, in CPU seconds: rounds of 50, 30 and 45 ms
    clock = itertools.chain([0.0, 0.050, 1.0, 1.030, 2.0, 2.045])
    monkeypatch.setattr(bench.time, "process_time", lambda: next(clock))
    assert bench.host_speed(rounds=3) == 30.0


def test_the_reference_loop_is_real_work_here() -> None:
    assert bench._reference_work() > 0
    ms = bench.host_speed(rounds=2)
    assert 1.0 < ms < 5000.0


def test_the_report_says_the_hosts_speed_when_it_was_read() -> None:
    text = "\n".join(bench.host_speed_lines({"hostSpeedMs": {"start": 41.5, "end": 43.0}}))
    assert "41.5 ms of CPU" in text and "43 ms after it" in text
    assert bench.host_speed_lines({}) == []  # a report from before it was read
