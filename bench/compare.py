"""`./tiny-saga bench compare RUN... --against RUN...`: two versions' bench runs side by side.

On a shared machine the same code measures differently from one run to the next (ADR 57: 80.5 and
69.5 ms of CPU per saga at 5/s, 20 minutes apart), so one run of each version cannot tell a change
from the noise. Run each version a few times, alternating (A, B, A, B: the host's mood then falls
on both), and give this the runs' result folders (or their report.json). For each phase and each
figure it prints each side's median and its range over the runs, and says which side is better only
when the two ranges do not overlap; with a single run on either side there is no range to judge by,
and it says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    label: str
    higher_is_better: bool

    def of(self, phase: dict[str, Any]) -> float | None:
        value: Any
        if self.label == "sagas/s":
            value = phase.get("completedPerSecond")
        elif self.label == "CPU ms/saga":
            value = phase.get("cpuMsPerSaga")
        elif self.label in ("p50 ms", "p99 ms"):
            value = (phase.get("latencyMs") or {}).get(self.label.split()[0])
        elif self.label == "turned away":
            value = phase.get("turnedAway")
        else:  # one process's CPU per saga: "cpu <process>"
            value = (phase.get("cpuMsPerSagaByProcess") or {}).get(self.label.removeprefix("cpu "))
        return float(value) if isinstance(value, int | float) else None


FIGURES = [
    Figure("sagas/s", True),
    Figure("CPU ms/saga", False),
    Figure("p50 ms", False),
    Figure("p99 ms", False),
    Figure("turned away", False),
]


def load(path: str) -> dict[str, Any]:
    p = Path(path)
    report = p / "report.json" if p.is_dir() else p
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"bench compare: {report} is not a bench report: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("phases"), list):
        raise SystemExit(f"bench compare: {report} is not a bench report (no phases)")
    return data


def spread(values: list[float]) -> tuple[float, float, float] | None:
    """(median, min, max) of the values, None for none."""
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def verdict(a: list[float], b: list[float], higher_is_better: bool) -> str:
    """Which side is better, when their ranges over the runs do not overlap."""
    if len(a) < 2 or len(b) < 2:
        return "one run: no range to judge by"
    if max(b) < min(a):
        return "B better" if not higher_is_better else "A better"
    if min(b) > max(a):
        return "B better" if higher_is_better else "A better"
    return "within the noise"


def _cell(s: tuple[float, float, float] | None, n: int) -> str:
    if s is None:
        return "-"
    med, lo, hi = s
    return f"{med:g}" if n < 2 else f"{med:g} ({lo:g}–{hi:g})"


def compare(a_runs: list[dict[str, Any]], b_runs: list[dict[str, Any]], processes: bool = False) -> str:
    """The comparison, as Markdown."""
    out = [
        f"A: {len(a_runs)} run(s), B: {len(b_runs)} run(s); each cell the median over the runs, "
        "with its range (min–max).",
        "",
        "| phase | figure | A | B | |",
        "|---|---|---|---|---|",
    ]

    def row(phase: str, label: str, a: list[float], b: list[float], higher: bool) -> None:
        out.append(
            f"| {phase} | {label} | {_cell(spread(a), len(a))} | {_cell(spread(b), len(b))} | {verdict(a, b, higher)} |"
        )

    # the hosts' speed (bench/run.py `host_speed`): not a result of the code, but a run on a slower
    # host (or while a neighbour slowed it) reads worse on every figure
    speed = [[float(v) for r in runs for v in (r.get("hostSpeedMs") or {}).values()] for runs in (a_runs, b_runs)]
    if speed[0] or speed[1]:
        out.append(
            f"| host | reference loop ms (lower: faster) | {_cell(spread(speed[0]), len(speed[0]))}"
            f" | {_cell(spread(speed[1]), len(speed[1]))} | the host, not the code |"
        )
    key = "idleCpuPercentOfOneCore"
    idle = [[float(r[key]) for r in runs if key in r] for runs in (a_runs, b_runs)]
    row("idle", "% of a core", idle[0], idle[1], False)
    names = list(dict.fromkeys(p["name"] for r in a_runs + b_runs for p in r["phases"]))
    for name in names:
        phases = [[p for r in runs for p in r["phases"] if p["name"] == name] for runs in (a_runs, b_runs)]
        # a phase offered at each run's own rate (the overload phase: twice the best step kept up)
        # compares only between runs offered alike: its offered rates are shown when they differ
        offered = [
            [float(p["offeredRate"]) for p in side if isinstance(p.get("offeredRate"), int | float)] for side in phases
        ]
        if len(set(offered[0] + offered[1])) > 1:
            out.append(
                f"| {name} | offered/s | {_cell(spread(offered[0]), len(offered[0]))}"
                f" | {_cell(spread(offered[1]), len(offered[1]))} | offered unlike: compare with care |"
            )
        figures = list(FIGURES)
        if processes:
            procs = dict.fromkeys(k for side in phases for p in side for k in p.get("cpuMsPerSagaByProcess") or {})
            figures += [Figure(f"cpu {proc}", False) for proc in procs]
        for fig in figures:
            a = [v for p in phases[0] if (v := fig.of(p)) is not None]
            b = [v for p in phases[1] if (v := fig.of(p)) is not None]
            if a or b:
                row(name, fig.label, a, b, fig.higher_is_better)
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="tiny-saga bench compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("a", nargs="+", metavar="RUN", help="version A's runs: result folders or report.json files")
    ap.add_argument("--against", nargs="+", required=True, metavar="RUN", help="version B's runs")
    ap.add_argument("--processes", action="store_true", help="each process's CPU per saga too")
    ap.add_argument("--out", type=Path, help="also write the table to this file")
    opts = ap.parse_args(argv)
    text = compare([load(p) for p in opts.a], [load(p) for p in opts.against], opts.processes)
    sys.stdout.write(text)
    if opts.out is not None:
        opts.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
