"""A small process supervisor: starts every process of the topology, restarts one that dies (with
backoff), keeps one log file per process, and writes what runs where to `run/state.json`.

A process can be held down on purpose (`tiny-saga stop NAME`, used by the fault tests): a file
`run/hold/NAME` makes the supervisor stop it and not restart it until the file is gone.
Run as `python -m tinysaga.infra.supervisor`; it stops its children on SIGTERM.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tinysaga.infra.topology import ProcSpec, processes
from tinysaga.platform.settings import Settings, get_settings

# seconds between two looks when nothing happens: the loop wakes at once when a child exits (SIGCHLD)
# or on a nudge (SIGUSR1), and when a restart or a kill falls due; each idle look cost about 1 ms
TICK = 10.0
STOP_GRACE = 8.0


@dataclass
class Child:
    spec: ProcSpec
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    failures: int = 0
    stopping_since: float | None = None
    log: object = field(default=None, repr=False)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.children = {p.name: Child(p) for p in processes(settings)}
        self.hold_dir = settings.run_dir / "hold"
        self.hold_dir.mkdir(parents=True, exist_ok=True)
        self.state_file = settings.run_dir / "state.json"
        self.running = True
        self._written = ""

    def held(self, name: str) -> bool:
        return (self.hold_dir / name).exists()

    def start(self, c: Child) -> None:
        self.s.logs_dir.mkdir(parents=True, exist_ok=True)
        logf = open(self.s.logs_dir / f"{c.spec.name}.log", "ab", buffering=0)  # noqa: SIM115
        logf.write(f"--- supervisor: starting {c.spec.name} at {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
        env = {**os.environ, **c.spec.env}
        c.proc = subprocess.Popen(
            c.spec.argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=c.spec.cwd,
            start_new_session=True,
        )
        if c.log is not None:
            c.log.close()
        c.log = logf
        c.started_at = time.monotonic()
        c.stopping_since = None

    def stop(self, c: Child, now: float) -> None:
        if c.proc is None or c.proc.poll() is not None:
            return
        if c.stopping_since is None:
            c.stopping_since = now
            c.proc.terminate()
        elif now - c.stopping_since > STOP_GRACE:
            c.proc.kill()

    def tick(self) -> None:
        now = time.monotonic()
        for c in self.children.values():
            alive = c.proc is not None and c.proc.poll() is None
            if self.held(c.spec.name):
                self.stop(c, now)
                continue
            if alive:
                if now - c.started_at > 30:
                    c.failures = 0
                continue
            if c.proc is not None and c.stopping_since is None:
                # it died on its own: restart with backoff
                code = c.proc.returncode
                c.log.write(f"--- supervisor: {c.spec.name} exited with {code}; restarting ---\n".encode())
                c.proc = None
                c.failures += 1
                c.restarts += 1
                c.next_start = now + min(10.0, 0.25 * 2 ** (c.failures - 1))
            if now >= c.next_start:
                self.start(c)
        self.write_state()

    def next_wake(self) -> float:
        """Seconds until the loop must look again: TICK, or sooner when a restart or the kill of a
        child that does not stop falls due."""
        now = time.monotonic()
        due = [c.next_start - now for c in self.children.values() if c.proc is None]
        due += [
            c.stopping_since + STOP_GRACE - now + 0.01
            for c in self.children.values()
            if c.stopping_since is not None and c.proc is not None and c.proc.poll() is None
        ]
        return max(0.01, min([TICK, *due]))

    def write_state(self) -> None:
        state = {
            "supervisor": os.getpid(),
            "children": {
                name: {
                    "pid": c.proc.pid if c.proc is not None and c.proc.poll() is None else None,
                    "port": c.spec.port,
                    "restarts": c.restarts,
                    "held": self.held(name),
                    "health": c.spec.health,
                }
                for name, c in self.children.items()
            },
        }
        text = json.dumps(state, indent=1)
        if text == self._written:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.state_file)
        self._written = text

    def shutdown(self) -> None:
        deadline = time.monotonic() + STOP_GRACE
        # the gateway and services first, Kafka last, so that nothing in flight loses its broker
        order = sorted(self.children.values(), key=lambda c: c.spec.stop_order)
        for group in sorted({c.spec.stop_order for c in order}):
            batch = [c for c in order if c.spec.stop_order == group and c.proc and c.proc.poll() is None]
            for c in batch:
                c.proc.terminate()
            for c in batch:
                try:
                    c.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    c.proc.kill()
                    c.proc.wait()
            deadline = time.monotonic() + STOP_GRACE
        self.state_file.unlink(missing_ok=True)

    def run(self) -> None:
        def on_term(*_: object) -> None:
            self.running = False

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        # Every signal writes a byte to the wake pipe: a child that dies is restarted at once, and a
        # hold file is acted on as soon as `nudge` is called, without a short polling tick.
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGUSR1, lambda *_: None)
        while self.running:
            self.tick()
            try:
                if select.select([wake_r], [], [], self.next_wake())[0]:
                    os.read(wake_r, 512)
            except InterruptedError:
                pass
        self.shutdown()


def pid_file(settings: Settings) -> Path:
    return settings.run_dir / "supervisor.pid"


def nudge(settings: Settings) -> None:
    """Wake the supervisor so that it looks at the hold files now (it would within TICK anyway)."""
    try:
        os.kill(int(pid_file(settings).read_text().strip()), signal.SIGUSR1)
    except (OSError, ValueError):
        pass


def main() -> None:
    settings = get_settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    pid_file(settings).write_text(str(os.getpid()))
    try:
        Supervisor(settings).run()
    finally:
        pid_file(settings).unlink(missing_ok=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
