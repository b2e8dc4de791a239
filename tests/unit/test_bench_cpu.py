"""The bench's CPU of a process tree keeps what its ended children used: PostgreSQL's backends come
and go, and a sum over the live ones fell when one exited, which `cpu_delta` reads as a restart
(one idle window was reported at 231 % of a core for PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys

import psutil
from bench import run as bench

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"


def test_a_child_that_ended_and_was_waited_for_stays_in_its_parents_cpu() -> None:
    me = psutil.Process()
    own, with_children = bench._cpu_seconds(me), bench._cpu_seconds(me, ended_children=True)
    subprocess.run([sys.executable, "-c", BURN], check=True)  # run and waited for
    assert own is not None and with_children is not None
    grew = bench._cpu_seconds(me, ended_children=True) - with_children  # type: ignore[operator]
    assert grew >= 0.3, grew
    assert bench._cpu_seconds(me) - own < 0.3  # type: ignore[operator]  # not this process's own


def test_a_fall_reads_as_a_restart_and_counts_from_zero() -> None:
    assert bench.cpu_delta({"order-1": 10.0, "kafka": 5.0}, {"order-1": 2.0, "kafka": 7.5}) == {
        "order-1": 2.0,
        "kafka": 2.5,
    }
