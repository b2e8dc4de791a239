"""`./tiny-saga bench compare`: each side's median and range over its runs, and a verdict only when
the ranges do not overlap (and each side has a range)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench.compare import compare, main, verdict


def run(cpu: float, rate: float, p99: float, idle: float = 4.0, payment: float = 7.0) -> dict[str, Any]:
    return {
        "idleCpuPercentOfOneCore": idle,
        "phases": [
            {
                "name": "light",
                "completedPerSecond": rate,
                "cpuMsPerSaga": cpu,
                "latencyMs": {"p50": p99 / 2, "p99": p99},
                "turnedAway": 0,
                "cpuMsPerSagaByProcess": {"payment": payment, "kafka": 15.0},
            }
        ],
    }


def rows(table: str) -> dict[tuple[str, str], list[str]]:
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("phase", "---"):
            out[(cells[0], cells[1])] = cells[2:]
    return out


def test_a_verdict_needs_ranges_that_do_not_overlap() -> None:
    assert verdict([80.5, 69.5], [73.0, 70.6], higher_is_better=False) == "within the noise"
    assert verdict([80.5, 79.0], [60.0, 62.0], higher_is_better=False) == "B better"
    assert verdict([80.5, 79.0], [60.0, 62.0], higher_is_better=True) == "A better"
    assert verdict([50.0, 52.0], [59.0, 61.0], higher_is_better=True) == "B better"
    assert verdict([50.0], [59.0], higher_is_better=True) == "one run: no range to judge by"


def test_each_figure_is_the_median_and_range_of_the_runs() -> None:
    a = [run(80.5, 5.0, 79.1), run(69.5, 5.0, 61.7), run(75.0, 5.0, 70.0)]
    b = [run(50.0, 5.0, 40.0, payment=3.0), run(52.0, 5.0, 90.0, payment=3.5)]
    table = rows(compare(a, b, processes=True))
    assert table[("light", "CPU ms/saga")] == ["75 (69.5–80.5)", "51 (50–52)", "B better"]
    assert table[("light", "p99 ms")] == ["70 (61.7–79.1)", "65 (40–90)", "within the noise"]
    assert table[("light", "cpu payment")] == ["7 (7–7)", "3.25 (3–3.5)", "B better"]
    assert table[("light", "cpu kafka")][2] == "within the noise"
    assert table[("idle", "% of a core")] == ["4 (4–4)", "4 (4–4)", "within the noise"]
    assert ("light", "cpu payment") not in rows(compare(a, b))
    assert ("host", "reference loop ms (lower: faster)") not in table  # runs from before it was read


def test_the_hosts_speed_is_shown_beside_the_code_and_never_judged() -> None:
    a = [run(80.0, 5.0, 70.0) | {"hostSpeedMs": {"start": 40.0, "end": 44.0}}, run(78.0, 5.0, 72.0)]
    b = [run(60.0, 5.0, 50.0) | {"hostSpeedMs": {"start": 70.0, "end": 71.0}}]
    table = rows(compare(a, b))
    host = table[("host", "reference loop ms (lower: faster)")]
    assert host == ["42 (40–44)", "70.5 (70–71)", "the host, not the code"]


def test_a_phase_offered_unlike_shows_its_offered_rates() -> None:
    def offered(r: dict[str, Any], rate: float) -> dict[str, Any]:
        r["phases"][0]["offeredRate"] = rate
        return r

    a = [offered(run(6.4, 271.1, 690.0), 590), offered(run(6.4, 275.1, 724.0), 467)]
    b = [offered(run(6.6, 266.9, 509.0), 576), offered(run(6.2, 285.2, 607.0), 358)]
    table = rows(compare(a, b))
    assert table[("light", "offered/s")] == ["528.5 (467–590)", "467 (358–576)", "offered unlike: compare with care"]
    alike = rows(compare([offered(run(6.4, 5.0, 70.0), 5)] * 2, [offered(run(6.0, 5.0, 60.0), 5)] * 2))
    assert ("light", "offered/s") not in alike  # a step offered alike: nothing to say


def test_the_command_reads_result_folders_and_refuses_what_is_not_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, r in (("a1", run(80.0, 5.0, 70.0)), ("a2", run(78.0, 5.0, 72.0)), ("b1", run(60.0, 5.0, 50.0))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(r))
    out = tmp_path / "cmp.md"
    assert main([str(tmp_path / "a1"), str(tmp_path / "a2"), "--against", str(tmp_path / "b1"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text() and "A: 2 run(s), B: 1 run(s)" in printed
    assert rows(printed)[("light", "CPU ms/saga")] == ["79 (78–80)", "60", "one run: no range to judge by"]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="not a bench report"):
        main([str(tmp_path / "bad.json"), "--against", str(tmp_path / "b1")])
    with pytest.raises(SystemExit, match="not a bench report"):
        main([str(tmp_path / "missing"), "--against", str(tmp_path / "b1")])
