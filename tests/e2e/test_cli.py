"""The `tiny-saga` command as a user runs it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid

from tinysaga.infra.topology import processes
from tinysaga.platform.settings import REPO_ROOT, Settings

CLI = [str(REPO_ROOT / "tiny-saga")]


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        CLI + args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_status_shows_every_process_healthy(settings: Settings) -> None:
    r = run(["status"])
    assert r.returncode == 0, r.stdout + r.stderr
    for p in processes(settings):
        line = next(ln for ln in r.stdout.splitlines() if ln.split()[0] == p.name)
        assert " up " in line and "healthy" in line and "unhealthy" not in line, line
    assert "postgres" in r.stdout


def test_logs_of_one_process(settings: Settings) -> None:
    r = run(["logs", "wallet", "-n", "5"])
    assert r.returncode == 0 and r.stdout.strip()
    r = run(["logs", "no-such-process"])
    assert r.returncode == 2 and "there are:" in r.stdout


def test_up_again_is_harmless(settings: Settings) -> None:
    before = {
        n: c["pid"]
        for n, c in __import__("json").loads((settings.run_dir / "state.json").read_text())["children"].items()
    }
    r = run(["up"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "already running" in r.stdout
    after = {
        n: c["pid"]
        for n, c in __import__("json").loads((settings.run_dir / "state.json").read_text())["children"].items()
    }
    assert after == before
    assert f"The saga runs by {settings.saga_mode}" in r.stdout


def test_up_in_the_other_mode_refuses_to_mix_modes_on_a_running_stack(settings: Settings) -> None:
    other = "orchestration" if settings.saga_mode == "choreography" else "choreography"
    r = run(["up"], env={"TINYSAGA_SAGA_MODE": other})
    assert r.returncode != 0
    assert f"runs the saga by {settings.saga_mode}, not {other}" in r.stdout + r.stderr


def test_up_says_what_cannot_start_and_exits_non_zero() -> None:
    home = REPO_ROOT / ".tinysaga" / f"cli-test-{uuid.uuid4().hex[:8]}"  # readable by the postgres user
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            env = {
                "TINYSAGA_HOME": str(home),
                "TINYSAGA_PG_PORT": str(port),
                "TINYSAGA_GATEWAY_PORT": "58080",
                "TINYSAGA_KAFKA_PORT": "59092",
                "TINYSAGA_KAFKA_CONTROLLER_PORT": "59093",
                "TINYSAGA_SERVICE_PORT_BASE": "58100",
            }
            r = run(["up"], env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert r.returncode == 1
    assert f"port {port}" in r.stdout and "TINYSAGA_PG_PORT" in r.stdout


def test_audit_reports_what_it_checked_and_exits_by_its_verdict(settings: Settings) -> None:
    r = run(["audit", "--wait", "120"])
    assert "checked orders:" in r.stdout and "checked consumer groups:" in r.stdout, r.stdout + r.stderr
    # the test stack holds the other tests' orders, at rest: every invariant holds
    assert r.returncode == 0 and "No violation" in r.stdout, r.stdout


def test_audit_of_a_stack_that_is_not_there_says_so(settings: Settings, tmp_path) -> None:
    home = tmp_path / "nothing-here"
    (home / "secrets").mkdir(parents=True)
    (home / "secrets" / "db.json").write_text('{"superuser": "x"}')
    r = run(["audit"], env={"TINYSAGA_HOME": str(home), "TINYSAGA_PG_PORT": str(_free_port())})
    assert r.returncode == 2 and "cannot read" in r.stdout, r.stdout + r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
