"""The bench's view of the stack's processes (bench/run.py `Processes`, `proc_table`): each name's
tree from one pass over /proc, its RSS summed from the same pass, on real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from bench import run as bench

from tinysaga.infra import postgres

# a parent that starts a child and both wait: a tree of two processes
TREE = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "time.sleep(60)\n"
)


def test_the_table_has_every_process_with_its_parent_and_rss() -> None:
    table = bench.proc_table()
    me = psutil.Process()
    assert table[os.getpid()][0] == os.getppid()
    assert abs(table[os.getpid()][1] - me.memory_info().rss) < 0.2 * me.memory_info().rss
    assert table[1][0] == 0 and os.getppid() in table  # init, whose parent is none, and this one's


def test_a_process_whose_name_has_parentheses_and_spaces_is_read(tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"  # the kernel's name of a process is its program's file name
    odd.symlink_to(sys.executable)
    child = subprocess.Popen([str(odd), "-c", "import time; time.sleep(30)"])
    try:
        for _ in range(100):  # until it has exec'd (its name is the link's then)
            if psutil.Process(child.pid).name() == "a) b (c":
                break
            time.sleep(0.02)
        ppid, rss = bench.proc_table()[child.pid]
        assert ppid == os.getpid() and rss > 1_000_000
    finally:
        child.kill()
        child.wait()


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    parent = subprocess.Popen([sys.executable, "-c", TREE])
    for _ in range(200):  # until the child is there
        if psutil.Process(parent.pid).children():
            break
        time.sleep(0.02)
    (tmp_path / "state.json").write_text(
        json.dumps({"supervisor": os.getpid(), "children": {"order-1": {"pid": parent.pid}, "gone": {"pid": None}}})
    )
    monkeypatch.setattr(postgres, "pid", lambda settings: None)
    yield bench.Processes(SimpleNamespace(run_dir=tmp_path)), parent
    for p in psutil.Process(parent.pid).children():
        p.kill()
    parent.kill()
    parent.wait()


def test_each_name_is_its_tree_root_first_and_the_supervisor_alone(stack) -> None:  # type: ignore[no-untyped-def]
    procs, parent = stack
    named = procs.named()
    child = psutil.Process(parent.pid).children()[0].pid
    assert [p.pid for p in named["order-1"]] == [parent.pid, child]
    assert [p.pid for p in named["supervisor"]] == [os.getpid()]  # not the test runner's children
    assert set(named) == {"order-1", "supervisor"}


def test_the_rss_of_a_name_is_the_sum_over_its_tree(stack) -> None:  # type: ignore[no-untyped-def]
    procs, parent = stack
    tree = [psutil.Process(parent.pid), *psutil.Process(parent.pid).children()]
    expected = sum(p.memory_info().rss for p in tree)
    rss = procs.rss_by_name()
    assert abs(rss["order-1"] - expected) < 0.1 * expected
    assert rss["order-1"] > psutil.Process(parent.pid).memory_info().rss  # the child's is in it
