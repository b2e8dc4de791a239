"""Issue 17 on the running stack: the metrics after a known mix of orders, a stuck saga listed and
counted before the sweeper fails it, the bulk replay of dead letters and the refund retry."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ApiUser, Stack, eventually, register, run_sync
from tinysaga.platform.settings import Settings

PROBLEM = "application/problem+json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Prometheus' text format: (sample name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(settings: Settings, service: str) -> list[Samples]:
    """Every replica's /metrics on its internal port."""
    return [
        parse(httpx.get(f"http://127.0.0.1:{settings.port_of(service, i)}/metrics", timeout=10).text)
        for i in range(1, settings.replicas(service) + 1)
    ]


def total(replicas: list[Samples], name: str, **labels: str) -> float:
    """The sum over replicas of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for s in replicas for (n, ls), v in s.items() if n == name and want <= ls)


def most(replicas: list[Samples], name: str, **labels: str) -> float:
    """The largest value among replicas (a figure each reads from the same database)."""
    return max((total([s], name, **labels) for s in replicas), default=0.0)


def test_metrics_count_a_known_mix_of_orders(gateway: str, product, settings: Settings) -> None:
    pid = product(stock=10, price="5.00")
    before = {s: scrape(settings, s) for s in ("order", "payment", "inventory")}
    rich, poor = register(gateway, tag="rich"), register(gateway, tag="poor")
    rich.deposit(100)
    placed = [rich.place(pid) for _ in range(3)]
    failed = [poor.place(pid) for _ in range(2)]  # no money
    for o in placed:
        assert rich.wait_terminal(o)["orderStatus"] == "PLACED"
    for o in failed:
        assert poor.wait_terminal(o)["orderStatus"] == "FAILED"

    def delta(of: str, name: str, **labels: str) -> float:
        """How much `name` grew on the replicas of service `of`."""
        return total(scrape(settings, of), name, **labels) - total(before[of], name, **labels)

    # the saga's duration by outcome and each step's time, observed by Order from its history
    assert delta("order", "tinysaga_saga_duration_seconds_count", outcome="PLACED") == 3
    assert delta("order", "tinysaga_saga_duration_seconds_count", outcome="FAILED") == 2
    assert delta("order", "tinysaga_saga_step_seconds_count", step="charge") == 5
    assert delta("order", "tinysaga_saga_step_seconds_count", step="reserve") == 3
    assert delta("order", "tinysaga_saga_duration_seconds_sum", outcome="PLACED") > 0
    # the consumers' counts per service and event name
    assert delta("payment", "tinysaga_events_total", service="payment", event="ORDER_INITIATED", outcome="handled") == 5
    assert delta("inventory", "tinysaga_events_total", event="PAYMENT_DONE", outcome="handled") == 3
    assert delta("inventory", "tinysaga_events_total", event="PAYMENT_FAIL", outcome="ignored") == 2
    assert delta("order", "tinysaga_events_total", event="INVENTORY_RESERVED", outcome="handled") == 3
    # consumer lag per group and partition, and each service's outbox
    inv = scrape(settings, "inventory")
    lag_partitions = {dict(ls)["partition"] for s in inv for (n, ls) in s if n == "tinysaga_consumer_lag"}
    assert lag_partitions == {str(p) for p in range(settings.topic_partitions)}  # the group's, over its replicas
    assert ("tinysaga_outbox_rows", frozenset({("service", "payment")})) in scrape(settings, "payment")[0]
    # the gateway never routes /metrics
    assert httpx.get(f"{gateway}/metrics").status_code == 404


def test_every_service_settled_its_heap_and_times_its_collections(settings: Settings) -> None:
    """ADR 60: what each service built to start is out of the collector's reach, and each
    collection since is timed by generation."""
    for service in ("auth", "order", "payment", "wallet", "inventory", "notification"):
        for replica in scrape(settings, service):
            frozen = replica[("tinysaga_gc_frozen_objects", frozenset({("service", service)}))]
            assert frozen > 10_000, (service, frozen)
            assert any(n == "tinysaga_gc_pause_seconds_count" and dict(ls)["service"] == service for n, ls in replica)


def test_a_stuck_saga_is_listed_and_counted_before_the_sweeper_fails_it(
    user: ApiUser, product, stack: Stack, settings: Settings, admin: ApiUser
) -> None:
    pid = product(stock=2, price="4.00")
    user.deposit(20)
    stack.hold("payment")  # so that the order is accepted (Order checks the stock with Inventory) ...
    try:
        oid = user.place(pid)
        stack.hold("inventory-1")  # ... and then held in PAYMENT_DONE
        stack.hold("inventory-2")
    finally:
        stack.release("payment")
    try:
        user.wait_until(oid, lambda o: o["orderStatus"] == "PAYMENT_DONE", timeout=20)

        def listed() -> dict[str, Any] | None:
            r = admin.get("/api/admin/sagas/stuck")
            assert r.status_code == 200, r.text
            return next((s for s in r.json() if s["orderId"] == oid), None)

        stuck = eventually(listed, timeout=settings.saga_timeout_seconds, what="the stuck saga listed", every=0.5)
        assert (stuck["orderStatus"], stuck["step"], stuck["lastEvent"]) == ("PAYMENT_DONE", "reserve", "PAYMENT_DONE")
        assert stuck["ageSeconds"] >= stuck["deadlineSeconds"]
        assert stuck["deadlineSeconds"] < settings.saga_timeout_seconds
        gauge = most(scrape(settings, "order"), "tinysaga_sagas_stuck", status="PAYMENT_DONE")
        order = user.get(f"/api/orders/{oid}").json()
        assert order["orderStatus"] == "PAYMENT_DONE", "listed only after the sweeper failed it"
        assert gauge >= 1
        final = user.wait_terminal(oid, timeout=settings.saga_timeout_seconds + 30)
        assert final["failReason"] == "TIMEOUT"
        assert listed() is None  # failed: no longer stuck
    finally:
        stack.release("inventory-1")
        stack.release("inventory-2")


def test_stuck_sagas_are_for_admins_only(user: ApiUser) -> None:
    r = user.get("/api/admin/sagas/stuck")
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM)


def _poison(settings: Settings, order_id: str) -> None:
    """A PAYMENT_DONE without what Inventory needs to reserve, straight onto the saga topic: Inventory
    fails it and dead-letters it (Order ignores it: no such order)."""

    from aiokafka import AIOKafkaProducer

    from tinysaga.contracts import events as ev

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            event = ev.new_event(ev.PAYMENT_DONE, correlation_id=order_id, orderId=order_id, userId="nobody")
            await producer.send_and_wait(
                settings.topic, event.to_bytes(), key=order_id.encode(), headers=[("eventName", b"PAYMENT_DONE")]
            )
        finally:
            await producer.stop()

    run_sync(send())  # a thread of its own: the browser tests leave an event loop running here


def test_dead_letters_are_replayed_in_bulk_after_a_dry_run(admin: ApiUser, settings: Settings) -> None:
    import uuid

    key = str(uuid.uuid4())
    dead_before = total(
        scrape(settings, "inventory"), "tinysaga_events_total", event="PAYMENT_DONE", outcome="dead_lettered"
    )
    _poison(settings, key)
    flt = {"service": "inventory", "eventName": "PAYMENT_DONE", "errorContains": "WITHOUT A VALID"}

    def mine(body: dict[str, Any]) -> list[dict[str, Any]]:
        return [d for d in body["deadLetters"] if d["key"] == key]

    def dry_run(**more: Any) -> dict[str, Any]:
        r = admin.post("/api/admin/dead-letters/replay", {**flt, "limit": 500, **more})
        assert r.status_code == 200, r.text
        return r.json()

    listed = eventually(lambda: mine(dry_run()), what="the dead letter kept by Order", every=0.5)
    assert len(listed) == 1 and listed[0]["earlierReplays"] == 0 and "productId" in listed[0]["error"]
    assert listed[0]["eventName"] == "PAYMENT_DONE" and listed[0]["service"] == "inventory"
    dead_after = total(
        scrape(settings, "inventory"), "tinysaga_events_total", event="PAYMENT_DONE", outcome="dead_lettered"
    )
    assert dead_after - dead_before == 1
    assert mine(dry_run()) == listed  # a dry run changes nothing

    r = admin.post("/api/admin/dead-letters/replay", {**flt, "limit": 500, "dryRun": False})
    assert r.status_code == 202, r.text
    assert any(d["key"] == key for d in r.json()["deadLetters"]) and r.json()["replayed"] == r.json()["matched"]
    # the replay went back to Inventory, which fails it again: a new dead letter of the same message
    again = eventually(lambda: mine(dry_run()), what="the replayed message dead-lettered again", every=0.5)
    assert again[0]["id"] != listed[0]["id"] and again[0]["earlierReplays"] == 0
    counts = {d["id"]: d["earlierReplays"] for d in mine(dry_run(includeReplayed=True))}
    assert counts[listed[0]["id"]] == 1
    r = admin.post("/api/admin/dead-letters/replay", {"sevice": "inventory", "dryRun": False})  # misspelt
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)


def test_a_failed_refund_is_retried_by_an_operator(rich_user: ApiUser, product, stack: Stack, admin: ApiUser) -> None:
    from decimal import Decimal

    pid = product(stock=3, price="7.00")
    balance = rich_user.balance()
    oid = rich_user.place(pid)
    assert rich_user.wait_terminal(oid)["orderStatus"] == "PLACED"
    stack.hold("wallet")
    try:
        r = rich_user.post(f"/api/orders/{oid}/cancel")
        assert r.status_code == 202, r.text
        canceled = rich_user.wait_until(
            oid, lambda o: o["orderStatus"] == "CANCELED" and o["refundStatus"] == "REFUND_FAILED", timeout=60
        )
        assert canceled["refundStatus"] == "REFUND_FAILED"
    finally:
        stack.release("wallet")
    assert rich_user.balance() == balance - Decimal("7.00")
    r = rich_user.post(f"/api/admin/orders/{oid}/refund-retry")
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM)
    r = admin.post(f"/api/admin/orders/{oid}/refund-retry")
    assert r.status_code == 202, r.text
    assert r.json()["refundStatus"] == "REFUND_FAILED"  # until Payment's retry answers
    done = rich_user.wait_until(oid, lambda o: o["refundStatus"] == "REFUND_DONE", timeout=30)
    assert done["orderStatus"] == "CANCELED"
    assert rich_user.balance() == balance
    names = [h["eventName"] for h in rich_user.get(f"/api/orders/{oid}/history").json()]
    assert names[-2:] == ["REFUND_RETRY_REQUESTED", "REFUND_DONE"]
    r = admin.post(f"/api/admin/orders/{oid}/refund-retry")  # nothing left to retry
    assert r.status_code == 409 and r.headers["content-type"].startswith(PROBLEM)
    import uuid

    assert admin.post(f"/api/admin/orders/{uuid.uuid4()}/refund-retry").status_code == 404


def test_top_once_prints_the_figures_of_the_running_stack(
    rich_user: ApiUser, product, admin: ApiUser, settings: Settings
) -> None:
    import os
    import re
    import subprocess
    import sys

    pid = product(stock=5, price="3.00")
    for oid in [rich_user.place(pid) for _ in range(2)]:
        assert rich_user.wait_terminal(oid)["orderStatus"] == "PLACED"
    summary = admin.get("/api/admin/sagas/summary")
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert body["ended"]["PLACED"] >= 2 and 0 < body["p50Seconds"] <= body["p99Seconds"] < 60
    assert body["sagasPerSecond"] > 0 and set(body["inFlight"]) == {
        "INITIATED",
        "PAYMENT_DONE",
        "REFUND_INITIATED",
        "CANCELING",
    }
    r = subprocess.run(
        [sys.executable, "-m", "tinysaga.cli", "top", "--once"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "sagas/s" in out and "p50 (60 s)" in out and "consumer lag" in out, out
    placed = re.search(r"PLACED (\d+), FAILED (\d+)", out)
    assert placed and int(placed.group(1)) >= 2, out
    for group in ("payment", "inventory", "notification", "order"):
        assert re.search(rf"^\W*{group}\W", out, re.M), f"no lag line for {group}:\n{out}"
    assert "down:" not in out
