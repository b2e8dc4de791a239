"""Starting and stopping a stack: what `tiny-saga up` says when the stack does not become healthy
(the end of the logs of what is down, and of Kafka's nodes and Toxiproxy, since a stack started
for a run is deleted with them), and `tiny-saga down` leaving nothing of the stack running."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tinysaga import cli
from tinysaga.cli import _log_tails
from tinysaga.platform.settings import Settings


def test_a_failed_start_shows_the_end_of_the_logs_of_what_is_down_and_of_every_kafka_node(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    s.logs_dir.mkdir(parents=True)
    (s.logs_dir / "order-1.log").write_text("".join(f"line {i}\n" for i in range(40)))
    for node in (1, 2, 3):
        (s.logs_dir / f"kafka-{node}.log").write_text(f"node {node} up\n")
    (s.logs_dir / "payment.log").write_text("not asked for\n")
    text = _log_tails(s, ["order-1", "kafka", "toxiproxy"])
    assert "--- the last 15 lines of order-1.log:\nline 25\n" in text and text.count("line ") == 15
    assert all(f"kafka-{n}.log:\nnode {n} up" in text for n in (1, 2, 3))
    assert "payment" not in text and "toxiproxy" not in text  # not asked for; no log (not started)


def test_down_stops_what_the_supervisor_left_running_and_kills_what_does_not_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor is gone (killed, or its shutdown took too long) and two children of its run
    are still up, each leading its own process group: one stops when asked, one ignores SIGTERM.
    `down` returns only once both are gone."""
    s = Settings(home=tmp_path)
    s.run_dir.mkdir(parents=True)
    monkeypatch.setattr(cli.postgres, "stop", lambda _s: None)
    monkeypatch.setattr(cli, "DOWN_GRACE", 0.5)
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)",
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline()  # its handler is in place
    children = {"kafka-1": {"pid": polite.pid}, "order-1": {"pid": stubborn.pid}, "web": {"pid": None}}
    (s.run_dir / "state.json").write_text(json.dumps({"children": children}))
    try:
        assert cli.cmd_down(s) == 0
        # both gone (reaped here: this test is their parent, so until then they are zombies)
        assert polite.wait(1) == -signal.SIGTERM and stubborn.wait(1) == -signal.SIGKILL
        assert not (s.run_dir / "state.json").exists()
    finally:
        for p in (polite, stubborn):
            p.kill()
