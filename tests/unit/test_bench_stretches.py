"""Where a saga's time goes (bench/stretches.py, ADR 72): the stretches between the records of each
saga, and the report's table."""

from bench.stretches import FIRST_ROW, LAST_ROW, Sent, lines, stretches


def saga(order_id: str, first: float, sent: list[tuple[str, float]], last: float) -> tuple[dict, list[Sent]]:
    return {order_id: (first, last)}, [Sent(order_id, name, at) for name, at in sent]


def test_a_saga_is_cut_at_each_record_it_sent_in_the_order_they_were_sent() -> None:
    rows, sent = saga("o1", 1000.0, [("PAYMENT_DONE", 1030.0), ("ORDER_INITIATED", 1002.0)], 1045.0)
    got = stretches(rows, sent)
    assert list(got) == [
        f"{FIRST_ROW} → ORDER_INITIATED",
        "ORDER_INITIATED → PAYMENT_DONE",
        f"PAYMENT_DONE → {LAST_ROW}",
    ]
    assert [s["p50"] for s in got.values()] == [2.0, 28.0, 15.0]
    assert all(s["n"] == 1 for s in got.values())


def test_percentiles_over_the_sagas_and_records_of_other_orders_left_out() -> None:
    rows: dict = {}
    sent: list[Sent] = []
    for i in range(100):  # the Payment stretch of saga i takes i ms
        r, s = saga(f"o{i}", 0.0, [("ORDER_INITIATED", 1.0), ("PAYMENT_DONE", 1.0 + i)], 200.0)
        rows |= r
        sent += s
    sent.append(Sent("not-measured", "ORDER_INITIATED", 50.0))
    got = stretches(rows, sent)
    payment = got["ORDER_INITIATED → PAYMENT_DONE"]
    assert payment == {"n": 100, "p50": 50.0, "p99": 99.0}
    assert got[f"{FIRST_ROW} → ORDER_INITIATED"] == {"n": 100, "p50": 1.0, "p99": 1.0}


def test_a_record_sent_after_the_last_row_is_not_a_step_of_the_saga() -> None:
    rows, sent = saga("o1", 0.0, [("ORDER_INITIATED", 2.0), ("ORDER_PLACED", 60.0)], 50.0)
    assert list(stretches(rows, sent)) == [f"{FIRST_ROW} → ORDER_INITIATED", f"ORDER_INITIATED → {LAST_ROW}"]


def test_a_saga_without_records_has_one_stretch_from_its_first_row_to_its_last() -> None:
    assert stretches({"o1": (0.0, 7.0)}, []) == {f"{FIRST_ROW} → {LAST_ROW}": {"n": 1, "p50": 7.0, "p99": 7.0}}


def test_the_table_has_a_row_per_phase_and_a_column_per_common_stretch() -> None:
    main = {"n": 95, "p50": 3.0, "p99": 9.0}
    rare = {"n": 5, "p50": 1.0, "p99": 1.0}
    phases = [
        {"name": "light", "placed": 100, "stretchesMs": {"a → b": main, "b → c": main, "x → y": rare}},
        {"name": "40/s", "placed": 100, "stretchesMs": {"a → b": main}},
        {"name": "old run", "placed": 10},  # a report from before the stretches were measured
    ]
    text = "\n".join(lines(phases))
    assert "| phase | a → b | b → c |" in text
    assert "x → y" not in text  # in under a tenth of the sagas
    assert "| light | 3.0 / 9.0 | 3.0 / 9.0 |" in text
    assert "| 40/s | 3.0 / 9.0 | - |" in text
    assert "| old run | - | - |" in text


def test_no_table_when_no_phase_measured_them() -> None:
    assert lines([{"name": "light", "placed": 10}]) == []
