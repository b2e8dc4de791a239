"""The sagas in flight as the overload rules read them (ADR 50, 52), against the stack's
PostgreSQL: how many orders are unsettled and how old the median one is, by the database's clock,
read through the partial index of the unsettled orders whatever the planner thinks of it (ADR 69).
Everything runs in a transaction that is rolled back, so the running stack never sees it."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.support import rolled_back, run_sync, wait_at_rest
from tinysaga.order import domain
from tinysaga.order.repository import OrderRepository
from tinysaga.platform.secrets import superuser_dsn
from tinysaga.platform.settings import Settings


async def in_flight_with(settings: Settings, rows: list[tuple[str, float]]) -> domain.InFlight:
    """`in_flight()` once `rows` (status, seconds since acceptance) are added to the orders."""
    conn = await asyncpg.connect(superuser_dsn(settings, "tinysaga_order"))
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            for status, age in rows:
                await conn.execute(
                    "INSERT INTO orders(order_id, user_id, product_id, product_quantity, price, total_amount,"
                    " currency, payment_type, order_status, deadline_at, created_at)"
                    " VALUES ($1, 'in-flight-test', 'P', 1, 1, 1, 'USD', 'WALLET', $2, now() + interval '1 min',"
                    " now() - $3 * interval '1 second')",
                    uuid.uuid4(),
                    status,
                    age,
                )
            return await OrderRepository(conn).in_flight()
        finally:
            await tx.rollback()
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def at_rest(settings: Settings) -> None:
    run_sync(wait_at_rest(settings))


@pytest.mark.usefixtures("at_rest")
def test_the_count_and_the_median_age_of_the_unsettled_orders(settings: Settings) -> None:
    rows = [("INITIATED", 1.0), ("PAYMENT_DONE", 2.0), ("CANCELING", 3.0), ("REFUND_INITIATED", 4.0)]
    rows += [("INITIATED", 600.0)]  # one stuck saga moves the median by one place, not by ten minutes
    rows += [("PLACED", 9.0), ("FAILED", 9.0), ("CANCELED", 9.0), ("ON_THE_WAY", 9.0)]  # settled: not counted
    got = run_sync(in_flight_with(settings, rows))
    assert got.count == 5
    assert got.median_age == pytest.approx(3.0, abs=0.01)
    assert got.expected_wait() == pytest.approx(6.0, abs=0.02)


@pytest.mark.usefixtures("at_rest")
def test_none_in_flight(settings: Settings) -> None:
    assert run_sync(in_flight_with(settings, [("PLACED", 1.0)])) == domain.InFlight(0, 0.0)


# The count of the function sagas_in_flight, as a plain query.
UNSETTLED_COUNT = (
    "SELECT count(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY created_at) FROM orders"
    " WHERE order_status IN ({})".format(", ".join(f"'{s.value}'" for s in domain.UNSETTLED))
)


async def plans_of_the_count(conn: asyncpg.Connection) -> tuple[str, list[str]]:
    """With a page read at random priced a million times a sequential one (the planner's view of
    a table whose index looks dear), the plan of the count asked as a plain query, and the plans
    auto_explain logs while `in_flight()` runs (loaded for this rolled-back transaction only)."""
    await conn.execute(
        "LOAD 'auto_explain'; SET LOCAL random_page_cost = 1000000; SET LOCAL auto_explain.log_min_duration = 0;"
        " SET LOCAL auto_explain.log_nested_statements = on; SET LOCAL auto_explain.log_level = notice"
    )
    plain = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + UNSETTLED_COUNT))
    logged: list[str] = []
    conn.add_log_listener(lambda _conn, message: logged.append(str(message)))
    await OrderRepository(conn).in_flight()
    await conn.execute("SELECT 1")  # the notices of the call have arrived once the next answer has
    return plain, logged


@pytest.mark.usefixtures("at_rest")
def test_the_count_reads_the_unsettled_index_where_the_planner_would_scan_the_table(settings: Settings) -> None:
    plain, logged = rolled_back(settings, "tinysaga_order", plans_of_the_count)
    assert "Seq Scan on orders" in plain  # the planner, left alone, would read the whole table
    (count,) = [plan for plan in logged if "FROM orders" in plan and "percentile_disc" in plan]
    assert "orders_unsettled" in count and "Seq Scan" not in count, count
