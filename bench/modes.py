"""The two saga modes side by side (`./tiny-saga bench --mode both`): each mode's full benchmark
ran one after the other on a fresh stack (results/<mode>/report.json); this writes
results/modes.md and results/modes.png from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.run import OVERLOAD, best_kept_up, kept_up


def _load(results: Path, mode: str) -> dict[str, Any]:
    return json.loads((results / mode / "report.json").read_text())


def _best(report: dict[str, Any]) -> float:
    best = best_kept_up(report["phases"][1:])
    return best["completedPerSecond"] if best else 0.0


def _messages(phase: dict[str, Any]) -> float | None:
    """Kafka messages per saga: records put on the saga's topics over the phase, per saga ended."""
    return phase.get("perSaga", {}).get("messages")


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def write_comparison(results: Path, modes: list[str]) -> None:
    reports = {m: _load(results, m) for m in modes}
    first = reports[modes[0]]
    runs = ", ".join(f"`{m}` from {reports[m]['date']}" for m in modes)
    own = ", ".join(f"[{m}]({m}/report.md)" for m in modes)
    lines = [
        "# Choreography and orchestration, side by side",
        "",
        f"Each mode's whole benchmark ran on a fresh stack, one after the other on the same machine"
        f" ({first['machine']['cpus']} CPUs, {first['machine']['cpuModel']}), with the same phases:"
        f" {runs}. Their own reports: {own}. The machine is shared: read the difference"
        " between the two columns, which ran minutes apart, rather than one absolute figure.",
        "",
        "## Summary",
        "",
        "| | " + " | ".join(modes) + " |",
        "|---|" + "---|" * len(modes),
        "| completed sagas/s, best load step that kept up | "
        + " | ".join(_fmt(_best(reports[m])) for m in modes)
        + " |",
        "| p50 / p99 ms at light load | "
        + " | ".join(
            f"{reports[m]['phases'][0]['latencyMs']['p50']} / {reports[m]['phases'][0]['latencyMs']['p99']}"
            for m in modes
        )
        + " |",
        "| CPU ms per saga at light load | "
        + " | ".join(_fmt(reports[m]["phases"][0]["cpuMsPerSaga"]) for m in modes)
        + " |",
        "| Kafka messages per saga at light load | "
        + " | ".join(_fmt(_messages(reports[m]["phases"][0])) for m in modes)
        + " |",
        "| idle CPU, % of one core | " + " | ".join(_fmt(reports[m]["idleCpuPercentOfOneCore"]) for m in modes) + " |",
        "",
        "## Per load step",
        "",
        "Each cell: the first mode / the second. A step that did not keep up (a backlog that grew, or"
        " sagas left over) is marked *.",
        "",
        "| phase | offered/s | sagas/s | p50 ms | p95 ms | p99 ms | CPU ms/saga | Kafka msgs/saga |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = list(dict.fromkeys(p["name"] for m in modes for p in reports[m]["phases"]))
    for i, name in enumerate(names):
        # the overload phase is run only by a mode that kept up at some step
        ps = [next((p for p in reports[m]["phases"] if p["name"] == name), None) for m in modes]
        if any(p is None for p in ps):
            lines.append(f"| {name} | " + " | ".join(["—"] * 7) + " |")
            continue

        def cell(get: Any, ps: list[dict[str, Any]] = ps) -> str:
            return " / ".join(_fmt(get(p)) for p in ps)

        rate = (
            cell(lambda p: p["completedPerSecond"])
            if i == 0
            else " / ".join(f"{_fmt(p['completedPerSecond'])}{'' if kept_up(p) else '*'}" for p in ps)
        )
        lines.append(
            f"| {name} | {_fmt(ps[0]['offeredRate'])} | {rate}"
            f" | {cell(lambda p: p['latencyMs']['p50'])} | {cell(lambda p: p['latencyMs']['p95'])}"
            f" | {cell(lambda p: p['latencyMs']['p99'])} | {cell(lambda p: p['cpuMsPerSaga'])}"
            f" | {cell(_messages)} |"
        )
    lines += [
        "",
        "Where the CPU goes, per process, at light load (ms per saga):",
        "",
        "| process | " + " | ".join(modes) + " |",
        "|---|" + "---|" * len(modes),
    ]
    procs = sorted({k for m in modes for k in reports[m]["phases"][0]["cpuMsPerSagaByProcess"]})
    for proc in procs:
        lines.append(
            f"| {proc} | "
            + " | ".join(_fmt(reports[m]["phases"][0]["cpuMsPerSagaByProcess"].get(proc)) for m in modes)
            + " |"
        )
    lines += ["", "![p99 and CPU per saga by load step, both modes](modes.png)", ""]
    (results / "modes.md").write_text("\n".join(lines) + "\n")
    _plot(results, reports, modes)


def _plot(results: Path, reports: dict[str, dict[str, Any]], modes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for m in modes:
        steps = [p for p in reports[m]["phases"][1:] if p["name"] != OVERLOAD]
        rates = [p["offeredRate"] for p in steps]
        a.plot(rates, [p["latencyMs"]["p99"] for p in steps], marker="o", label=m)
        b.plot(rates, [p["cpuMsPerSaga"] for p in steps], marker="o", label=m)
    a.set(xlabel="offered sagas/s", ylabel="p99 ms (log)", yscale="log", title="p99 acceptance → PLACED")
    b.set(xlabel="offered sagas/s", ylabel="CPU ms per saga", title="CPU per saga (whole stack)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(results / "modes.png", dpi=110)
    plt.close(fig)
