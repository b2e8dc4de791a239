"""The `tiny-saga` command: up, down, status, logs, reset, test, stop/start NAME, saga, top, prometheus,
bench, audit, chaos."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

import asyncpg

from tinysaga.infra import kafka, postgres, supervisor, system, toxiproxy
from tinysaga.infra.postgres import SetupError
from tinysaga.infra.supervisor import pid_file
from tinysaga.infra.topology import processes
from tinysaga.platform.secrets import ensure_secrets
from tinysaga.platform.settings import REPO_ROOT, Settings, get_settings

UP_TIMEOUT = 180.0
DOWN_GRACE = 10.0  # seconds for what the supervisor left running to stop before it is killed


def say(msg: str) -> None:
    print(msg, flush=True)


# ---- health ---------------------------------------------------------------------------------------


def probe(health: str | None, pid: int | None) -> bool:
    if health is None:
        return pid is not None
    if health.startswith("tcp:"):
        try:
            with socket.create_connection(("127.0.0.1", int(health[4:])), timeout=1):
                return True
        except OSError:
            return False
    try:
        with urlopen(Request(health), timeout=2) as r:
            return r.status == 200
    except (URLError, HTTPError, OSError):
        return False


def supervisor_pid(s: Settings) -> int | None:
    try:
        pid = int(pid_file(s).read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def read_state(s: Settings) -> dict:
    try:
        return json.loads((s.run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {"children": {}}


# ---- commands -------------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _log_tails(s: Settings, names: list[str], lines: int = 15) -> str:
    """The end of these processes' logs (a Kafka cluster's: every node's), for a start that failed:
    a stack started for a run (chaos, a test run) is deleted with its logs once it ends."""
    out = []
    for name in dict.fromkeys(names):
        for log in sorted(s.logs_dir.glob(f"{name}.log")) + sorted(s.logs_dir.glob(f"{name}-[0-9].log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"\n--- the last {len(tail)} lines of {log.name}:\n" + "\n".join(tail))
    return "".join(out)


def cmd_up(s: Settings, quiet: bool = False) -> int:
    t0 = time.monotonic()
    s.home.mkdir(parents=True, exist_ok=True)
    for d in (s.logs_dir, s.run_dir):
        d.mkdir(parents=True, exist_ok=True)
    say(f"Tiny-Saga: state in {s.home}")
    system.ensure_packages(["haproxy"])
    ensure_secrets(s)
    kafka.ensure_installed(s)
    say("  PostgreSQL ...")
    postgres.ensure_cluster(s)
    postgres.start(s)
    postgres.provision(s)
    kafka.ensure_configured(s)
    if s.fault_proxy:
        toxiproxy.ensure_installed(s)
        toxiproxy.write_config(s)
    system.write_gateway_config(s)
    mode_file = s.run_dir / "saga-mode"
    if supervisor_pid(s) is None:
        mode_file.write_text(s.saga_mode)
        taken = [f"{p.name} needs port {p.port}" for p in processes(s) if p.port and not _port_free(p.port)]
        if taken:
            raise SetupError(
                "ports are taken by other programs: "
                + "; ".join(taken)
                + " (see the README for the TINYSAGA_*_PORT settings)"
            )
        say("  starting the supervisor (Kafka, relay, services, gateway) ...")
        logf = open(s.logs_dir / "supervisor.log", "ab")  # noqa: SIM115
        subprocess.Popen(
            [sys.executable, "-m", "tinysaga.infra.supervisor"],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=REPO_ROOT,
            env=os.environ.copy(),
        )
    else:
        running = mode_file.read_text().strip() if mode_file.exists() else "choreography"
        if running != s.saga_mode:  # the supervisor and its children keep the mode they started with
            raise SetupError(
                f"the running stack runs the saga by {running}, not {s.saga_mode}: `./tiny-saga down` it first"
            )
        say("  the supervisor is already running; it restarts whatever is down")
    deadline = t0 + UP_TIMEOUT
    down: list[str] = []
    while time.monotonic() < deadline:
        state = read_state(s)["children"]
        down = [p.name for p in processes(s) if not probe(p.health, (state.get(p.name) or {}).get("pid"))]
        if not down and probe(f"http://127.0.0.1:{s.gateway_port}/health/backends", 1):
            break
        time.sleep(0.5)
    else:
        raise SetupError(
            f"not healthy after {UP_TIMEOUT:.0f} s: {', '.join(down) or 'gateway backends'}"
            f" (see `tiny-saga logs NAME`, logs in {s.logs_dir})" + _log_tails(s, [*down, "kafka", "toxiproxy"])
        )
    system.seed_demo_user(s)
    if not quiet:
        say(f"\nTiny-Saga is up in {time.monotonic() - t0:.0f} s.")
        say(f"  Storefront and API: http://127.0.0.1:{s.gateway_port}/")
        say(f"  Demo user:  {s.demo_email} / {s.demo_password}")
        say(f"  Admin:      {s.admin_email} / {s.effective_admin_password if s.profile != 'production' else '(set)'}")
        say(f"  The saga runs by {s.saga_mode} (TINYSAGA_SAGA_MODE).")
        say("  `./tiny-saga status` shows every process; `./tiny-saga down` stops them.")
    return 0


def _alive(pid: int) -> bool:
    """The process runs (a zombie, exited and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def cmd_down(s: Settings) -> int:
    # each child leads a process group of its own (its pid, from the supervisor's state)
    children = [c["pid"] for c in read_state(s).get("children", {}).values() if c.get("pid")]
    pid = supervisor_pid(s)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            if supervisor_pid(s) is None:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    # children the supervisor left (it was killed, or its shutdown took too long): asked to stop,
    # then killed, so that "stopped" means their ports and files are free for the next start
    for sig, wait in ((signal.SIGTERM, DOWN_GRACE), (signal.SIGKILL, 5.0)):
        left = [c for c in children if _alive(c)]
        for child in left:
            try:
                os.killpg(child, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [c for c in left if _alive(c)]
    (s.run_dir / "state.json").unlink(missing_ok=True)
    postgres.stop(s)
    say("Tiny-Saga stopped (data kept; `./tiny-saga reset` deletes it).")
    return 0


def cmd_status(s: Settings) -> int:
    state = read_state(s)["children"]
    sup = supervisor_pid(s)
    rows = [("supervisor", "up" if sup else "down", sup or "-", "-", "-")]
    pg_up = postgres.is_running(s)
    rows.append(("postgres", "up" if pg_up else "down", postgres.pid(s) or "-", s.pg_port, "healthy" if pg_up else "-"))
    all_ok = bool(sup) and pg_up
    for p in processes(s):
        c = state.get(p.name) or {}
        pid = c.get("pid")
        healthy = probe(p.health, pid) if pid else False
        all_ok &= healthy
        status = "held" if c.get("held") else ("up" if pid else "down")
        rows.append(
            (
                p.name,
                status,
                pid or "-",
                p.port or "-",
                ("healthy" if healthy else "unhealthy") + (f" ({c['restarts']} restarts)" if c.get("restarts") else ""),
            )
        )
    print(f"{'PROCESS':<16}{'STATE':<8}{'PID':<9}{'PORT':<7}HEALTH")
    for r in rows:
        print(f"{r[0]:<16}{r[1]:<8}{r[2]!s:<9}{r[3]!s:<7}{r[4]}")
    return 0 if all_ok else 3


def cmd_logs(s: Settings, name: str | None, follow: bool, lines: int) -> int:
    files = sorted(s.logs_dir.glob("*.log")) if name is None else [s.logs_dir / f"{name}.log"]
    files = [f for f in files if f.exists()]
    if not files:
        names = sorted(f.stem for f in s.logs_dir.glob("*.log"))
        say(f"no log for {name!r}; there are: {', '.join(names) or 'none yet'}")
        return 2
    argv = ["tail", f"-n{lines}"] + (["-F"] if follow else []) + [str(f) for f in files]
    return subprocess.call(argv)


STATE_FOLDERS = ("pg", "kafka", "logs", "run", "secrets", "gateway", "mail", "toxiproxy")


def cmd_reset(s: Settings) -> int:
    cmd_down(s)
    # only this stack's own folders: the download cache and other stacks' homes inside stay
    for name in STATE_FOLDERS:
        shutil.rmtree(s.home / name, ignore_errors=True)
    outside = postgres.pg_root(s)
    if s.home.resolve() not in outside.resolve().parents:
        shutil.rmtree(outside.parent, ignore_errors=True)
    say(f"Tiny-Saga data deleted from {s.home} (the download cache is kept).")
    return 0


def cmd_hold(s: Settings, name: str, hold: bool) -> int:
    names = {p.name for p in processes(s)}
    if name not in names:
        say(f"unknown process {name!r}; one of: {', '.join(sorted(names))}")
        return 2
    f = s.run_dir / "hold" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    if hold:
        f.touch()
    else:
        f.unlink(missing_ok=True)
    supervisor.nudge(s)
    say(f"{name}: {'held down' if hold else 'released; the supervisor starts it'}")
    return 0


TEST_ENV = {
    "TINYSAGA_HOME": str(REPO_ROOT / ".tinysaga" / "test-stack"),
    "TINYSAGA_GATEWAY_PORT": "18080",
    "TINYSAGA_KAFKA_PORT": "19092",
    "TINYSAGA_KAFKA_CONTROLLER_PORT": "19093",
    "TINYSAGA_PG_PORT": "15544",
    "TINYSAGA_SERVICE_PORT_BASE": "18100",
    "TINYSAGA_SAGA_TIMEOUT_SECONDS": "15",
    "TINYSAGA_SWEEPER_INTERVAL_SECONDS": "1",
    "TINYSAGA_WALLET_DEADLINE_SECONDS": "3",
    "TINYSAGA_RATE_AUTH_PER_MIN": "600",
}


def cmd_test(s: Settings, pytest_args: list[str]) -> int:
    """The whole suite against a stack of its own (own ports and state dir), then clean up."""
    env = {**os.environ, **{k: v for k, v in TEST_ENV.items() if k not in os.environ}}
    env.setdefault("TINYSAGA_CACHE", str(s.cache))
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    me = [sys.executable, "-m", "tinysaga.cli"]
    system.ensure_packages(["chromium"])  # the browser tests drive Debian's chromium
    code = 1
    try:
        if subprocess.call([*me, "reset"], env=env) != 0:
            return 1
        if subprocess.call([*me, "up"], env=env) != 0:
            say("the test stack did not come up")
            return 1
        code = subprocess.call([sys.executable, "-m", "pytest", *pytest_args], env=env, cwd=REPO_ROOT)
        if code == 5:
            say("pytest ran no test: that is a broken set-up, not a pass")
            code = 1
    finally:
        if not os.environ.get("TINYSAGA_KEEP_TEST_STACK"):
            subprocess.call([*me, "reset"], env=env)
    return code


def cmd_saga(fmt: str, write: bool) -> int:
    """The saga as declared in contracts/saga.py: a table, a Mermaid diagram, or both; `--write`
    regenerates what is generated from it (the README's saga section, docs/events/*.json)."""
    from tinysaga.contracts import docs, saga  # noqa: PLC0415

    saga.check_definition()
    if write:
        for p in docs.write(REPO_ROOT):
            say(f"wrote {p.relative_to(REPO_ROOT)}")
        return 0
    if fmt in ("table", "all"):
        say(saga.table())
    if fmt == "all":
        say("")
    if fmt in ("mermaid", "all"):
        say(saga.mermaid())
    return 0


CHAOS_ENV = {
    "TINYSAGA_HOME": str(REPO_ROOT / ".tinysaga" / "chaos-stack"),
    "TINYSAGA_GATEWAY_PORT": "17080",
    "TINYSAGA_KAFKA_PORT": "17092",
    "TINYSAGA_KAFKA_CONTROLLER_PORT": "17093",
    "TINYSAGA_PG_PORT": "17544",
    "TINYSAGA_SERVICE_PORT_BASE": "16100",
    "TINYSAGA_SAGA_TIMEOUT_SECONDS": "60",
    "TINYSAGA_SWEEPER_INTERVAL_SECONDS": "2",
    "TINYSAGA_RATE_AUTH_PER_MIN": "6000",
}


def cmd_chaos(s: Settings, chaos_args: list[str]) -> int:
    """`tinysaga.ops.chaos` on a stack of its own (own ports and state dir, the services behind
    Toxiproxy), then clean up."""
    env = {**os.environ, **{k: v for k, v in CHAOS_ENV.items() if k not in os.environ}}
    env["TINYSAGA_FAULT_PROXY"] = "1"
    env.setdefault("TINYSAGA_CACHE", str(s.cache))
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    me = [sys.executable, "-m", "tinysaga.cli"]
    driver = [sys.executable, "-m", "tinysaga.ops.chaos", *chaos_args]
    if any(a in ("-h", "--help", "--schedule-only") for a in chaos_args):
        return subprocess.call(driver, env=env)
    code = 1
    try:
        if subprocess.call([*me, "reset"], env=env) != 0:
            return 1
        if subprocess.call([*me, "up"], env=env) != 0:
            say("the chaos stack did not come up")
            return 1
        code = subprocess.call(driver, env=env)
    finally:
        if not os.environ.get("TINYSAGA_KEEP_CHAOS_STACK"):
            subprocess.call([*me, "reset"], env=env)
    return code


def cmd_audit(s: Settings, wait: float) -> int:
    """SPEC section 4 on the running stack: 0 when every invariant holds, 1 when one does not, 2
    when the stack cannot be read."""
    import asyncio  # noqa: PLC0415

    from tinysaga.ops.audit import audit, wait_at_rest  # noqa: PLC0415

    try:
        if wait > 0:
            left = asyncio.run(wait_at_rest(s, wait))
            if any(left.values()):
                say(f"not at rest after {wait:.0f} s: " + ", ".join(f"{k} {v}" for k, v in left.items() if v))
        report = asyncio.run(audit(s))
    except (OSError, asyncpg.PostgresError) as e:
        say(f"tiny-saga audit: cannot read the stack's databases ({type(e).__name__}: {e}); is it up?")
        return 2
    say(report.render())
    return 0 if report.ok else 1


def cmd_prometheus(s: Settings, write: bool) -> int:
    """Print the scrape configuration of the stack these settings describe; `--write` regenerates
    the checked-in one (deploy/prometheus/prometheus.yml, every setting at its default)."""
    from tinysaga.infra import prometheus  # noqa: PLC0415

    if write:
        prometheus.CONFIG.write_text(prometheus.default_config())
        say(f"wrote {prometheus.CONFIG.relative_to(REPO_ROOT)}")
        return 0
    print(prometheus.scrape_config(s), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tiny-saga", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="install what is missing, start everything detached, wait until healthy")
    sub.add_parser("down", help="stop everything (data stays)")
    sub.add_parser("status", help="every process: state, pid, port, health")
    lg = sub.add_parser("logs", help="the logs (all, or one process)")
    lg.add_argument("name", nargs="?")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("-n", "--lines", type=int, default=100)
    sub.add_parser("reset", help="stop and delete all local data")
    st = sub.add_parser("stop", help="hold one process down (the supervisor will not restart it)")
    st.add_argument("name")
    sa = sub.add_parser("start", help="release a held process")
    sa.add_argument("name")
    t = sub.add_parser("test", help="run the whole test suite on a stack of its own")
    t.add_argument("pytest_args", nargs=argparse.REMAINDER)
    sg = sub.add_parser("saga", help="the saga as declared in the code: a table and a Mermaid diagram")
    sg.add_argument("--format", choices=("all", "table", "mermaid"), default="all")
    sg.add_argument("--write", action="store_true", help="regenerate the README's saga section and docs/events/")
    tp = sub.add_parser("top", help="a live view of the running stack (sagas/s, latency, stuck sagas, lag)")
    tp.add_argument("--once", action="store_true", help="print one snapshot and exit")
    tp.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    pm = sub.add_parser("prometheus", help="the scrape configuration of this stack for Prometheus")
    pm.add_argument(
        "--write", action="store_true", help="regenerate deploy/prometheus/prometheus.yml (default settings)"
    )
    b = sub.add_parser("bench", help="the benchmark (see bench/README.md)")
    b.add_argument("bench_args", nargs=argparse.REMAINDER)
    au = sub.add_parser("audit", help="check SPEC section 4 on the running stack (exit 0 only when all hold)")
    au.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="first wait up to this long to be at rest")
    ch = sub.add_parser("chaos", help="orders under injected faults on a stack of its own, then the audit")
    ch.add_argument("chaos_args", nargs=argparse.REMAINDER, help="--seed N --orders N --minutes M (see chaos --help)")
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("test", "bench", "chaos"):  # everything after is the runner's own arguments
        args = argparse.Namespace(cmd=argv[0], pytest_args=argv[1:], bench_args=argv[1:], chaos_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    s = get_settings()
    try:
        if args.cmd == "up":
            return cmd_up(s)
        if args.cmd == "down":
            return cmd_down(s)
        if args.cmd == "status":
            return cmd_status(s)
        if args.cmd == "logs":
            return cmd_logs(s, args.name, args.follow, args.lines)
        if args.cmd == "reset":
            return cmd_reset(s)
        if args.cmd in ("stop", "start"):
            return cmd_hold(s, args.name, args.cmd == "stop")
        if args.cmd == "test":
            return cmd_test(s, args.pytest_args)
        if args.cmd == "saga":
            return cmd_saga(args.format, args.write)
        if args.cmd == "chaos":
            return cmd_chaos(s, args.chaos_args)
        if args.cmd == "audit":
            return cmd_audit(s, args.wait)
        if args.cmd == "top":
            from tinysaga.infra import top  # noqa: PLC0415

            return top.run(s, args.once, args.interval)
        if args.cmd == "prometheus":
            return cmd_prometheus(s, args.write)
        if args.cmd == "bench":
            from bench.run import main as bench_main  # noqa: PLC0415

            return bench_main(args.bench_args)
    except SetupError as e:
        say(f"tiny-saga {args.cmd}: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
