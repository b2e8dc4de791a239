"""The supervisor sleeps TICK seconds when nothing happens, and wakes sooner when something falls
due: a restart after a backoff, or the kill of a held child that did not stop within STOP_GRACE."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tinysaga.infra import supervisor
from tinysaga.platform.settings import Settings


def _quiet(tmp_path: Path) -> supervisor.Supervisor:
    sup = supervisor.Supervisor(Settings(home=tmp_path))
    for c in sup.children.values():  # every child running, none stopping
        c.proc = subprocess.Popen(["sleep", "30"])
    return sup


def _end(sup: supervisor.Supervisor) -> None:
    for c in sup.children.values():
        if c.proc is not None:
            c.proc.kill()
            c.proc.wait()


def test_with_nothing_due_the_supervisor_sleeps_a_whole_tick(tmp_path: Path) -> None:
    sup = _quiet(tmp_path)
    try:
        assert sup.next_wake() == supervisor.TICK
    finally:
        _end(sup)


def test_a_child_that_does_not_stop_is_killed_on_time(tmp_path: Path) -> None:
    sup = _quiet(tmp_path)
    try:
        held = next(iter(sup.children.values()))
        held.stopping_since = time.monotonic() - (supervisor.STOP_GRACE - 2)  # asked to stop, ignores it
        assert 1.5 < sup.next_wake() <= 2.1
        held.proc.kill()
        held.proc.wait()
        assert sup.next_wake() == supervisor.TICK  # it is gone: nothing due
    finally:
        _end(sup)


def test_a_restart_after_its_backoff_is_on_time(tmp_path: Path) -> None:
    sup = _quiet(tmp_path)
    try:
        down = next(iter(sup.children.values()))
        down.proc.kill()
        down.proc.wait()
        down.proc, down.next_start = None, time.monotonic() + 0.5
        assert 0.3 < sup.next_wake() <= 0.5
    finally:
        _end(sup)
