"""`tiny-saga chaos`: the schedule comes from the seed alone and holds every fault the issue asks for;
the report counts each saga under the fault it began under."""

from __future__ import annotations

from collections import Counter

from tinysaga.ops.chaos import (
    KILLED_SERVICES,
    Fault,
    LoadResult,
    build_schedule,
    format_schedule,
    render,
    window_table,
)


def test_the_same_seed_gives_the_same_schedule() -> None:
    assert build_schedule(42, 3, 3) == build_schedule(42, 3, 3)
    assert format_schedule(build_schedule(42, 3, 3)) == format_schedule(build_schedule(42, 3, 3))


def test_another_seed_gives_another_schedule() -> None:
    assert build_schedule(42, 3, 3) != build_schedule(43, 3, 3)


def test_three_nodes_bring_every_kind_of_fault_one_at_a_time() -> None:
    for seed in range(20):
        sched = build_schedule(seed, 3, 3)
        kinds = [f.kind for f in sched]
        assert {f.target for f in sched if f.kind == "kill"} == set(KILLED_SERVICES)
        assert kinds.count("kafka-kill") == 2
        assert "active controller" in {f.target for f in sched if f.kind == "kafka-kill"}
        assert {"pg-restart", "latency", "drop", "kafka-cut", "duplicate"} <= set(kinds)
        assert {f.target for f in sched if f.kind == "latency"} >= {"postgres", "wallet"}
        # in order, within the run, and each over before the next begins
        for a, b in zip(sched, sched[1:], strict=False):
            assert a.at + a.seconds < b.at
        assert 0 < sched[0].at and sched[-1].at + sched[-1].seconds < 3 * 60


def test_one_node_has_no_controller_to_kill_and_no_node_to_cut_off() -> None:
    sched = build_schedule(5, 3, 1)
    assert [f.target for f in sched if f.kind == "kafka-kill"] == ["kafka"]
    assert "kafka-cut" not in {f.kind for f in sched}


def test_each_saga_and_request_counts_in_the_window_of_the_fault_before_it() -> None:
    kill, cut = Fault(5, "kill", "wallet", 0), Fault(20, "kafka-cut", "kafka-2", 10)
    ran = [(kill, 1005.0, "killed"), (cut, 1020.0, "cut")]
    sagas = [(1001.0, 0.1, "PLACED", None), (1006.0, 2.0, "PLACED", None), (1007.0, 4.0, "FAILED", "TIMEOUT")]
    sent = [(1001.0, "202"), (1006.0, "202"), (1007.0, "202"), (1021.0, "503")]
    rows = window_table(ran, sagas, sent, 1000.0)
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("no fault yet (baseline)", 0.0, 1, 0, [0.1]),
        ("kill -9 wallet", 5.0, 2, 0, [2.0, 4.0]),
        ("cut Kafka node kafka-2 off from the services for 10 s", 20.0, 1, 1, []),
    ]
    text = render(ran, LoadResult(codes=Counter({"202": 3, "503": 1}), sent=sent), sagas, 1000.0)
    assert "PLACED 2, FAILED/TIMEOUT 1" in text and "kill -9 wallet" in text
