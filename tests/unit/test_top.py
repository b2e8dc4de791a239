"""`./tiny-saga top` and the Operations page without a stack: what the operations view reads of a
service's /metrics (`platform.operations`), what top draws of a snapshot (the numbers, the stuck
sagas, the processes down) and what the page is sent of it."""

from __future__ import annotations

from rich.console import Console

from tinysaga.infra import top
from tinysaga.platform import operations
from tinysaga.platform.operations import Snapshot
from tinysaga.platform.settings import Settings

INVENTORY_1 = """
# TYPE tinysaga_consumer_lag gauge
tinysaga_consumer_lag{group="inventory",partition="0",service="inventory",topic="order-topic"} 4.0
tinysaga_consumer_lag{group="inventory",partition="1",service="inventory",topic="order-topic"} 3.0
# TYPE tinysaga_outbox_rows gauge
tinysaga_outbox_rows{service="inventory"} 7.0
# TYPE tinysaga_outbox_oldest_seconds gauge
tinysaga_outbox_oldest_seconds{service="inventory"} 2.5
# TYPE tinysaga_events_total counter
tinysaga_events_total{event="PAYMENT_DONE",outcome="dead_lettered",service="inventory"} 2.0
tinysaga_events_total{event="PAYMENT_DONE",outcome="handled",service="inventory"} 90.0
"""
INVENTORY_2 = """
# TYPE tinysaga_consumer_lag gauge
tinysaga_consumer_lag{group="inventory",partition="2",service="inventory",topic="order-topic"} 5.0
# TYPE tinysaga_outbox_rows gauge
tinysaga_outbox_rows{service="inventory"} 7.0
# TYPE tinysaga_outbox_oldest_seconds gauge
tinysaga_outbox_oldest_seconds{service="inventory"} 2.5
# TYPE tinysaga_events_total counter
tinysaga_events_total{event="PAYMENT_DONE",outcome="dead_lettered",service="inventory"} 1.0
"""
PAYMENT = """
# TYPE tinysaga_wallet_retries_total counter
tinysaga_wallet_retries_total{call="debit"} 3.0
tinysaga_wallet_retries_total{call="refund"} 1.0
"""


def test_lag_and_dead_letters_add_up_over_replicas_and_the_outbox_is_counted_once() -> None:
    snap = Snapshot()
    operations.read_metrics(snap, "inventory", INVENTORY_1)
    operations.read_metrics(snap, "inventory", INVENTORY_2)
    operations.read_metrics(snap, "payment", PAYMENT)
    assert snap.lag == {("inventory", "inventory"): 12.0}
    assert snap.outbox == {"inventory": (7.0, 2.5)}
    assert snap.dead_lettered == {"inventory": 3.0}
    assert snap.wallet_retries == 4.0
    page = snap.to_json()
    assert page["consumerLag"] == [{"service": "inventory", "group": "inventory", "records": 12.0}]
    assert page["outboxes"] == [{"service": "inventory", "rows": 7.0, "oldestSeconds": 2.5}]
    assert page["deadLettered"] == {"inventory": 3.0} and page["walletRetries"] == 4.0


def test_the_services_with_a_metrics_endpoint_are_every_service_process() -> None:
    from tinysaga.infra.topology import processes

    settings = Settings.model_construct()
    procs = operations.service_processes(settings)
    assert [p[0] for p in procs] == [
        "auth",
        "order-1",
        "order-2",
        "payment",
        "wallet",
        "inventory-1",
        "inventory-2",
        "notification",
        "web",
    ]
    assert procs[1] == ("order-1", "order", "http://127.0.0.1:8111")
    # the same processes, on the same ports, as the stack runs
    ports = {p.name: p.port for p in processes(settings)}
    assert all(url == f"http://127.0.0.1:{ports[name]}" for name, _, url in procs)


def drawn(snap: Snapshot) -> str:
    console = Console(record=True, width=140, color_system=None)
    console.print(top.render(snap))
    return console.export_text()


def test_the_view_shows_the_figures_the_stuck_sagas_and_what_is_down() -> None:
    snap = Snapshot(
        summary={
            "windowSeconds": 60,
            "ended": {"PLACED": 90, "FAILED": 6, "CANCELED": 0},
            "sagasPerSecond": 1.6,
            "p50Seconds": 0.028,
            "p99Seconds": 1.5,
            "inFlight": {"INITIATED": 2, "PAYMENT_DONE": 5, "REFUND_INITIATED": 0, "CANCELING": 1},
            "stuck": {"INITIATED": 0, "PAYMENT_DONE": 4, "REFUND_INITIATED": 0, "CANCELING": 0},
            "oldestSeconds": {"INITIATED": 0.5, "PAYMENT_DONE": 12.34, "REFUND_INITIATED": None, "CANCELING": 3.0},
            "deadLetters": {"kept": 9, "notReplayed": 2},
            "awaiting": {
                "INITIATED": ["charge"],
                "PAYMENT_DONE": ["reserve"],
                "REFUND_INITIATED": ["refund"],
                "CANCELING": ["refund", "release"],
            },
        },
        stuck=[
            {
                "orderId": "6f1c2a1e-0000-4000-8000-000000000001",
                "orderStatus": "PAYMENT_DONE",
                "waitingFor": ["reserve"],
                "ageSeconds": 12.34,
                "deadlineSeconds": 10,
                "lastEvent": "PAYMENT_DONE",
            }
        ],
        lag={("inventory", "inventory"): 12.0},
        outbox={"payment": (3.0, 0.4)},
        dead_lettered={"inventory": 2.0},
        down=["inventory-2"],
    )
    text = drawn(snap)
    for expected in (
        "1.60",  # sagas/s
        "28 ms",  # p50
        "1.50 s",  # p99
        "PLACED 90, FAILED 6, CANCELED 0",
        "2 new / 9 kept",
        "6f1c2a1e-0000-4000-8000-000000000001",
        "12.3 s (> 10 s)",
        "reserve",
        "down: inventory-2",
        "400 ms",  # the payment outbox's oldest row
    ):
        assert expected in text, f"{expected!r} not in\n{text}"
    row = next(line for line in text.splitlines() if "PAYMENT_DONE" in line and "reserve" in line)
    assert [c.strip() for c in row.split("│") if c.strip()] == ["reserve", "PAYMENT_DONE", "5", "12.34 s", "4"], row
    assert any("refund, release" in line and "CANCELING" in line for line in text.splitlines())


def test_without_order_the_view_says_so() -> None:
    assert "Order does not answer" in drawn(Snapshot(down=["order-1", "order-2"]))


def test_without_a_stack_top_says_so(tmp_path) -> None:  # noqa: ANN001
    console = Console(record=True, width=100, color_system=None)
    assert top.run(Settings.model_construct(home=tmp_path), once=True, console=console) == 1
    assert "no stack here" in console.export_text()
