"""The saga map and the Operations page in a real browser (Debian's chromium through Playwright),
against the running stack: the map follows an order live to PLACED and another through its refund,
for its owner and for the admin; the Operations page's figures move as orders are placed, and show
a saga held in flight by the step it waits for. Waits are on the DOM, never on sleeps."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_storefront import ORDER_URL, SAGA_TIMEOUT_MS, open_product, sign_in, tid
from tests.support import ApiUser, Stack, register
from tinysaga.contracts import saga
from tinysaga.platform.settings import get_settings

pytestmark = pytest.mark.browser

ORDER_STEPS = [s.name for s in saga.STEPS]
LIVE_MS = 15_000  # a few of the page's own refreshes, on a busy machine


def step(page: Page, name: str):
    return page.locator(f'[data-testid="map-step"][data-step="{name}"]')


def status_node(page: Page, status: str):
    return page.locator(f'[data-testid="map-status"][data-status="{status}"]')


def edge(page: Page, source: str, target: str):
    return page.locator(f'[data-testid="map-edge"][data-from="{source}"][data-to="{target}"]')


def records_of(page: Page, service: str, name: str):
    return page.locator(f'[data-testid="map-record"][data-service="{service}"][data-step="{name}"]')


def test_the_map_draws_the_declared_saga_and_follows_an_order_to_placed(
    page: Page, gateway: str, product, stack: Stack, shots
) -> None:
    pid = product(stock=4, price="7.00")
    user = register(gateway, tag="map")
    user.deposit(50)
    sign_in(page, user.email, user.password)
    open_product(page, pid)
    expect(tid(page, "order-submit")).to_be_enabled()

    stack.hold("payment")  # the order is accepted, and waits for its charge
    try:
        tid(page, "order-submit").click()
        expect(page).to_have_url(ORDER_URL)
        drawing = tid(page, "saga-map-drawing")
        # every step of the definition is drawn, those not run yet included
        expect(page.locator('[data-testid="map-step"]')).to_have_count(len(ORDER_STEPS))
        drawn = page.locator('[data-testid="map-step"]').evaluate_all("els => els.map(e => e.dataset.step)")
        assert sorted(drawn) == sorted(ORDER_STEPS)
        expect(drawing.locator("svg")).to_have_attribute("data-steps", str(len(ORDER_STEPS)))
        expect(step(page, "create_order")).to_have_attribute("data-state", "done")
        expect(step(page, "charge")).to_have_attribute("data-state", "current")
        expect(step(page, "reserve")).to_have_attribute("data-state", "not_run")
        expect(status_node(page, "PLACED")).to_have_attribute("data-reached", "false")
        expect(tid(page, "map-live")).to_have_attribute("data-state", "live")
    finally:
        stack.release("payment")

    expect(status_node(page, "PLACED")).to_have_attribute("data-reached", "true", timeout=SAGA_TIMEOUT_MS)
    for name in ("create_order", "charge", "reserve", "track"):
        expect(step(page, name)).to_have_attribute("data-state", "done")
    for name in ("refund", "release", "time_out", "cancel_order", "ship", "deliver"):
        expect(step(page, name)).to_have_attribute("data-state", "not_run")
    for source, target in (("create_order", "charge"), ("charge", "reserve"), ("reserve", "PLACED")):
        expect(edge(page, source, target)).to_have_attribute("data-taken", "true")
    expect(edge(page, "reserve", "refund")).to_have_attribute("data-taken", "false")
    # what each service did, from its own records
    expect(records_of(page, "order", "create_order")).to_have_count(1)
    expect(records_of(page, "payment", "charge")).to_contain_text("charged 7.00 USD")
    expect(records_of(page, "wallet", "charge")).to_contain_text("debited 7.00 USD")
    expect(records_of(page, "inventory", "reserve")).to_contain_text("reserved 1 ×")
    expect(records_of(page, "notification", "notify").first).to_be_visible(timeout=30_000)
    expect(tid(page, "map-unknown")).to_be_hidden()
    expect(tid(page, "map-live")).to_have_attribute("data-state", "done", timeout=30_000)
    # the same map in either saga mode, which it names
    expect(tid(page, "map-mode")).to_have_attribute("data-mode", get_settings().saga_mode)
    tid(page, "saga-map").scroll_into_view_if_needed()
    shots.take(page, "saga-map-placed", full_page=False)


def test_the_map_shows_a_refund_to_the_owner_and_the_admin_sees_any_map(
    new_context, gateway: str, product, stack: Stack, settings, shots
) -> None:
    pid = product(stock=1, price="5.00")
    a, b = register(gateway, tag="map-a"), register(gateway, tag="map-b")
    a.deposit(20)
    b.deposit(20)
    stack.hold("payment")  # both pass the early check: one is placed, the other refunded
    try:
        oa, ob = a.place(pid), b.place(pid)
    finally:
        stack.release("payment")
    fa = a.wait_terminal(oa)
    b.wait_terminal(ob)
    (loser, lost), (_, won) = ((a, oa), (b, ob)) if fa["orderStatus"] == "FAILED" else ((b, ob), (a, oa))

    page = new_context().new_page()
    sign_in(page, loser.email, loser.password)
    page.goto(f"/orders/{lost}")
    expect(status_node(page, "FAILED")).to_have_attribute("data-reached", "true", timeout=SAGA_TIMEOUT_MS)
    expect(status_node(page, "PLACED")).to_have_attribute("data-reached", "false")
    expect(step(page, "charge")).to_have_attribute("data-state", "done")
    expect(step(page, "reserve")).to_have_attribute("data-state", "failed")
    expect(step(page, "refund")).to_have_attribute("data-state", "done", timeout=SAGA_TIMEOUT_MS)
    expect(step(page, "release")).to_have_attribute("data-state", "not_run")
    expect(records_of(page, "inventory", "reserve")).to_have_attribute("data-state", "failed")
    expect(records_of(page, "wallet", "refund")).to_contain_text("credited 5.00 USD back")
    expect(records_of(page, "payment", "refund")).to_contain_text("refunded 5.00 USD")
    # the way it went: out of stock into the refund, and the refund into FAILED; not the payment's failure
    expect(edge(page, "reserve", "refund")).to_have_attribute("data-taken", "true")
    expect(edge(page, "refund", "FAILED or CANCELED").first).to_have_attribute("data-taken", "true")
    expect(edge(page, "charge", "FAILED")).to_have_attribute("data-taken", "false")
    expect(edge(page, "reserve", "PLACED")).to_have_attribute("data-taken", "false")
    tid(page, "saga-map").scroll_into_view_if_needed()
    shots.take(page, "saga-map-refunded", full_page=False, publish_as="saga-map.png")

    # the admin: from the recent sagas to the winner's map, and the saga as declared
    admin_page = new_context().new_page()
    sign_in(admin_page, settings.admin_email, settings.effective_admin_password)
    admin_page.goto("/admin")
    admin_page.locator(f'[data-testid="saga-row"][data-order-id="{won}"] [data-testid="saga-map-link"]').click()
    expect(admin_page).to_have_url(re.compile(rf"/admin/orders/{won}$"))
    expect(tid(admin_page, "map-order-status")).to_have_attribute("data-status", "PLACED")
    expect(status_node(admin_page, "PLACED")).to_have_attribute("data-reached", "true")
    expect(step(admin_page, "reserve")).to_have_attribute("data-state", "done")
    tid(admin_page, "nav-saga").click()
    expect(admin_page).to_have_url(re.compile(r"/admin/saga$"))
    expect(admin_page.locator('[data-testid="saga-step-row"]')).to_have_count(len(ORDER_STEPS))
    expect(admin_page.locator('[data-testid="map-step"][data-state="declared"]')).to_have_count(len(ORDER_STEPS))
    tid(admin_page, "map-order-id").fill("not an order")
    tid(admin_page, "map-order-submit").click()
    expect(tid(admin_page, "map-order-error")).to_be_visible()
    tid(admin_page, "map-order-id").fill(lost)
    tid(admin_page, "map-order-submit").click()
    expect(admin_page).to_have_url(re.compile(rf"/admin/orders/{lost}$"))
    expect(step(admin_page, "reserve")).to_have_attribute("data-state", "failed")


def test_the_operations_page_is_live_and_shows_a_saga_held_by_its_step(
    page: Page, gateway: str, product, stack: Stack, settings, shots
) -> None:
    sign_in(page, settings.admin_email, settings.effective_admin_password)
    tid(page, "nav-operations").click()
    expect(page).to_have_url(re.compile(r"/admin/operations$"))
    live = tid(page, "ops-live")
    expect(live).to_have_attribute("data-state", "live")
    expect(live).to_have_attribute("data-reads", re.compile(r"^([3-9]|\d\d+)$"), timeout=LIVE_MS)  # on its own
    three_or_more = re.compile(r"^([3-9]|\d\d+)$")

    # three orders held before their charge (Payment stopped): in flight, waiting for `charge`;
    # then let go: they end, and the last minute's figures show them
    pid = product(stock=10, price="2.00")
    shopper = register(gateway, tag="ops")
    shopper.deposit(50)
    initiated = page.locator('[data-testid="ops-in-flight-row"][data-status="INITIATED"]')
    expect(initiated).to_contain_text("charge")
    before = int(initiated.get_by_test_id("in-flight").get_attribute("data-value") or "0")
    stack.hold("payment")
    try:
        placed = [shopper.place(pid) for _ in range(3)]
        page.wait_for_function(
            "n => Number(document.querySelector("
            "'[data-testid=ops-in-flight-row][data-status=INITIATED] [data-testid=in-flight]').dataset.value) >= n",
            arg=before + 3,
        )
        expect(tid(page, "ops-in-flight-total")).to_have_attribute("data-value", three_or_more, timeout=LIVE_MS)
        # Order's outbox is listed (empty or nearly: its rows go to Kafka right after the commit)
        expect(page.locator('[data-testid="ops-outbox-row"][data-service="order"]')).to_be_visible()
    finally:
        stack.release("payment")
    for oid in placed:
        assert shopper.wait_terminal(oid)["orderStatus"] == "PLACED"
    expect(tid(page, "ops-ended")).to_have_attribute("data-value", three_or_more, timeout=LIVE_MS)
    none = re.compile(r"^(0|)$")
    expect(tid(page, "ops-sagas-per-second")).not_to_have_attribute("data-value", none, timeout=LIVE_MS)
    expect(tid(page, "ops-p50")).not_to_have_attribute("data-value", "")
    expect(tid(page, "ops-throughput").get_by_test_id("chart")).to_have_attribute("data-points", three_or_more)
    expect(page.locator('[data-testid="ops-lag-row"]').first).to_be_visible()
    shots.take(page, "operations", publish_as="operations.png")

    # an order held in PAYMENT_DONE (Inventory down): in flight, waiting for `reserve`, for so long
    stack.hold("payment")
    try:
        held = shopper.place(pid)
        stack.hold("inventory-1")
        stack.hold("inventory-2")
    finally:
        stack.release("payment")
    try:
        shopper.wait_until(held, lambda o: o["orderStatus"] == "PAYMENT_DONE", timeout=20)
        row = page.locator('[data-testid="ops-in-flight-row"][data-status="PAYMENT_DONE"]')
        expect(row).to_contain_text("reserve")
        expect(row.get_by_test_id("in-flight")).not_to_have_attribute("data-value", "0", timeout=LIVE_MS)
        a_number = re.compile(r"^\d+(\.\d+)?$")
        expect(row.get_by_test_id("oldest")).to_have_attribute("data-value", a_number, timeout=LIVE_MS)
        # its map: Inventory does not answer, the map says so and is drawn all the same
        page.goto(f"/admin/orders/{held}")
        expect(tid(page, "map-unknown")).to_contain_text("inventory")
        expect(step(page, "charge")).to_have_attribute("data-state", "done")
        expect(step(page, "release")).to_have_attribute("data-state", "unknown")
    finally:
        stack.release("inventory-1")
        stack.release("inventory-2")


def test_a_shopper_sees_neither_the_operations_nor_an_admin_map(page: Page, gateway: str) -> None:
    user: ApiUser = register(gateway, tag="notops")
    sign_in(page, user.email, user.password)
    expect(tid(page, "nav-operations")).to_be_hidden()
    expect(tid(page, "nav-saga")).to_be_hidden()
    page.goto("/admin/operations")
    expect(tid(page, "ops-error")).to_contain_text("administrators")
    page.goto(f"/admin/orders/{'0' * 8}-0000-4000-8000-000000000000")
    expect(tid(page, "saga-map-error")).to_be_visible()
