"""The storefront in a real browser (Debian's chromium through Playwright), against the running
stack through the gateway: what a shopper and an operator see and can do.

Waits are on the DOM (Playwright's `expect` retries until its timeout), never on sleeps."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest
from playwright.sync_api import Page, Request, expect

from tests.support import ApiUser, Stack, register, run_sync, unique_email

pytestmark = pytest.mark.browser

SAGA_TIMEOUT_MS = 60_000
SIGN_IN_TIMEOUT_MS = 20_000  # the password check is Argon2 on purpose: slow on a busy two-core runner
ORDER_URL = re.compile(r"/orders/[0-9a-f-]{36}$")
TERMINAL = re.compile(r"^(PLACED|FAILED)$")  # the outcomes of a saga that nobody cancels


def tid(page: Page, testid: str):
    return page.get_by_test_id(testid)


def sign_in(page: Page, email: str, password: str) -> None:
    page.goto("/signin")
    tid(page, "signin-email").fill(email)
    tid(page, "signin-password").fill(password)
    tid(page, "signin-submit").click()
    expect(tid(page, "user-email")).to_have_text(email, timeout=SIGN_IN_TIMEOUT_MS)
    expect(tid(page, "signout")).to_be_visible()


def open_product(page: Page, pid: str) -> None:
    """The order form of `pid`, with the quote loaded."""
    page.goto(f"/products/{pid}")
    expect(tid(page, "quote-total")).not_to_have_text("…")


def is_stream(request: Request) -> bool:
    """The request of an order page's live status stream."""
    return "/api/orders/" in request.url and request.url.endswith("/events")


def submit_and_follow(page: Page) -> None:
    """Submit the order form (with Payment held): the order's page opens, INITIATED, and follows it
    live. The stream's request is waited for: the page says "live" just before it sends it."""
    with page.expect_request(is_stream):
        tid(page, "order-submit").click()
        expect(page).to_have_url(ORDER_URL)
    expect(tid(page, "order-status")).to_have_attribute("data-status", "INITIATED")
    expect(tid(page, "live-indicator")).to_have_attribute("data-state", "live")


def step_attrs(page: Page, attr: str) -> list[str]:
    return page.locator('[data-testid="timeline-step"]').evaluate_all(f"els => els.map(e => e.getAttribute('{attr}'))")


def test_sign_up_top_up_and_order_follow_the_saga_live(page: Page, admin: ApiUser, stack: Stack, shots) -> None:
    pid = f"mug-{uuid.uuid4().hex[:8]}"
    r = admin.post(
        "/api/admin/products",
        {"productId": pid, "name": "Enamel Camp Mug", "type": "kitchen", "price": 12.50, "availableCount": 7},
    )
    assert r.status_code == 201, r.text

    # the catalogue, signed out: price and live availability
    page.goto("/")
    card = page.locator(f'[data-testid="product-card"][data-product-id="{pid}"]')
    expect(card).to_be_visible()
    expect(card.get_by_test_id("price")).to_contain_text("12.50")
    expect(card.get_by_test_id("availability")).to_have_attribute("data-available", "7")
    expect(tid(page, "nav-signin")).to_be_visible()
    shots.take(page, "storefront", full_page=False, publish_as="storefront.png")
    # availability is live: a stock change shows up without a reload, at the catalogue's next
    # refresh (every 5 s), so the wait is longer than one period (it was exactly one: a race)
    assert admin.put(f"/api/admin/products/{pid}/stock", {"availableCount": 6}).status_code == 200
    expect(card.get_by_test_id("availability")).to_have_attribute("data-available", "6", timeout=12_000)
    expect(card.get_by_test_id("availability")).to_have_text("6 in stock")

    # sign up: lands on the wallet, signed in
    email = unique_email("ui")
    tid(page, "nav-signup").click()
    tid(page, "signup-email").fill(email)
    tid(page, "signup-name").fill("Ada Shopper")
    tid(page, "signup-password").fill("correct-horse-1")
    tid(page, "signup-phone").fill("+15550123")
    tid(page, "signup-submit").click()
    expect(page).to_have_url(re.compile(r"/wallet$"))
    expect(tid(page, "user-email")).to_have_text(email)
    expect(tid(page, "wallet-balance")).to_have_attribute("data-amount", "0")

    # top up 100
    tid(page, "topup-amount").fill("100")
    tid(page, "topup-submit").click()
    expect(tid(page, "wallet-balance")).to_have_attribute("data-amount", "100")
    expect(page.locator('[data-testid="ledger-row"][data-type="DEPOSIT"]')).to_have_count(1)

    # the order form: the quote decides the payment mode
    tid(page, "nav-shop").click()
    page.locator(f'[data-testid="product-card"][data-product-id="{pid}"] [data-testid="order-link"]').click()
    expect(page).to_have_url(re.compile(rf"/products/{pid}$"))
    tid(page, "quantity").fill("2")
    expect(tid(page, "quote-total")).to_contain_text("25.00")
    expect(tid(page, "product")).to_contain_text("6 in stock")
    expect(tid(page, "pay-WALLET")).to_be_enabled()
    expect(tid(page, "pay-WALLET")).to_be_checked()
    expect(tid(page, "out-of-stock")).to_be_hidden()
    expect(tid(page, "order-submit")).to_be_enabled()

    # order: the order page follows the saga over SSE, in the same document (no reload)
    # (Payment is held until the page follows the order: a saga can end before the page loads, and
    # an ended order's page has no stream to open)
    page.evaluate("window.__sameDocument = 'yes'")
    stack.hold("payment")
    try:
        submit_and_follow(page)
    finally:
        stack.release("payment")
    expect(tid(page, "order-status")).to_have_attribute("data-status", "PLACED", timeout=SAGA_TIMEOUT_MS)
    assert page.evaluate("window.__sameDocument") == "yes", "the page was reloaded"
    expect(tid(page, "live-indicator")).to_have_attribute("data-state", "done")
    expect(tid(page, "order-total")).to_contain_text("25.00")

    # the timeline: the saga's steps from /history, oldest first, ending in PLACED
    steps = page.locator('[data-testid="timeline-step"]:not([data-pending])')
    expect(steps.last).to_have_attribute("data-status", "PLACED")
    statuses = step_attrs(page, "data-status")
    events = step_attrs(page, "data-event")
    assert statuses[0] == "INITIATED" and statuses[-1] == "PLACED", statuses
    assert "ORDER_INITIATED" in events and "INVENTORY_RESERVED" in events, events
    shots.take(page, "order-timeline", full_page=False, publish_as="order-timeline.png")

    # the orders list, the wallet's ledger and the inbox tell the same story
    order_id = page.url.rsplit("/", 1)[1]
    tid(page, "nav-orders").click()
    row = page.locator(f'[data-testid="order-row"][data-order-id="{order_id}"]')
    expect(row).to_have_attribute("data-status", "PLACED")
    tid(page, "nav-wallet").click()
    expect(tid(page, "wallet-balance")).to_have_attribute("data-amount", "75")
    expect(page.locator('[data-testid="ledger-row"][data-type="PAYMENT"]')).to_have_count(1)
    tid(page, "nav-inbox").click()
    placed = page.locator(f'[data-testid="notification"][data-type="ORDER_PLACED"][data-order-id="{order_id}"]')
    expect(placed).to_be_visible(timeout=30_000)
    shots.take(page, "inbox")

    # sign out: the cookie is gone, the private pages send to sign-in
    tid(page, "signout").click()
    expect(tid(page, "nav-signin")).to_be_visible()
    page.goto("/orders")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Forders$"))


def test_too_little_money_disables_the_wallet_with_the_reason(
    page: Page, gateway: str, product, admin: ApiUser, shots
) -> None:
    pid = product(stock=5, price="30.00")
    sold_out = product(stock=0, price="5.00")
    last_one = product(stock=1, price="5.00")
    user = register(gateway, tag="poor")
    user.deposit(10)

    # a private page while signed out: sent to sign in, then back
    page.goto("/wallet")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fwallet$"))
    expect(tid(page, "flash")).to_contain_text("sign in")
    tid(page, "signin-email").fill(user.email)
    tid(page, "signin-password").fill("wrong-password-1")
    tid(page, "signin-submit").click()
    expect(tid(page, "signin-error")).to_have_text("Wrong email or password.")
    tid(page, "signin-password").fill(user.password)
    tid(page, "signin-submit").click()
    expect(page).to_have_url(re.compile(r"/wallet$"))
    expect(tid(page, "wallet-balance")).to_have_attribute("data-amount", "10")

    # 30.00 with 10.00 in the wallet: WALLET is disabled, the reason is shown, no order possible
    open_product(page, pid)
    expect(tid(page, "pay-WALLET")).to_be_disabled()
    reason = tid(page, "pay-WALLET-reason")
    expect(reason).to_be_visible()
    expect(reason).to_have_attribute("data-reason", "INSUFFICIENT_FUNDS")
    expect(reason).to_contain_text("Not enough money in your wallet")
    expect(reason.get_by_role("link", name="Top up your wallet")).to_be_visible()
    expect(tid(page, "order-submit")).to_be_disabled()
    shots.take(page, "insufficient-funds")

    # out of stock is shown before ordering
    open_product(page, sold_out)
    expect(tid(page, "out-of-stock")).to_be_visible()
    expect(tid(page, "out-of-stock")).to_contain_text("Out of stock")
    expect(tid(page, "order-submit")).to_be_disabled()

    # in stock when the page loaded, gone when the order is sent: 409, said plainly
    open_product(page, last_one)
    expect(tid(page, "order-submit")).to_be_enabled()
    r = admin.put(f"/api/admin/products/{last_one}/stock", {"availableCount": 0})
    assert r.status_code == 200, r.text
    tid(page, "order-submit").click()
    expect(tid(page, "order-error")).to_contain_text("Out of stock")
    expect(tid(page, "out-of-stock")).to_be_visible()
    expect(tid(page, "order-submit")).to_be_disabled()
    expect(page).to_have_url(re.compile(rf"/products/{last_one}$"))
    assert user.get("/api/orders").json() == [], "no order may have been created"


def test_the_loser_of_a_race_for_the_last_item_sees_its_refund(
    new_context, gateway: str, product, stack: Stack, shots
) -> None:
    """Two tabs of one user order the last item; Payment is held so both orders are
    accepted before either reserves stock. One is PLACED, the other FAILED and refunded, and
    each tab shows it live."""
    pid = product(stock=1, price="5.00")
    user = register(gateway, tag="race")
    user.deposit(100)
    ctx = new_context()
    a = ctx.new_page()
    sign_in(a, user.email, user.password)
    b = ctx.new_page()  # same cookie jar: the same user in a second tab
    for p in (a, b):
        open_product(p, pid)
        expect(tid(p, "order-submit")).to_be_enabled()

    stack.hold("payment")
    try:
        for p in (a, b):
            submit_and_follow(p)
    finally:
        stack.release("payment")

    for p in (a, b):
        expect(tid(p, "order-status")).to_have_attribute("data-status", TERMINAL, timeout=SAGA_TIMEOUT_MS)
    outcome = {p: tid(p, "order-status").get_attribute("data-status") for p in (a, b)}
    assert sorted(outcome.values()) == ["FAILED", "PLACED"], outcome
    loser = next(p for p, s in outcome.items() if s == "FAILED")

    expect(tid(loser, "fail-reason")).to_have_attribute("data-reason", "INVENTORY_INSUFFICIENT")
    expect(tid(loser, "refund-status")).to_have_attribute("data-refund", "REFUND_DONE")
    expect(tid(loser, "refund-status")).to_contain_text("the money is back in your wallet")
    expect(loser.locator('[data-testid="timeline-step"]:not([data-pending])').last).to_have_attribute(
        "data-status", "FAILED"
    )
    events = step_attrs(loser, "data-event")
    assert "INVENTORY_INSUFFICIENT" in events and "REFUND_DONE" in events, events
    loser.bring_to_front()
    shots.take(loser, "order-refunded")
    assert user.balance() == 95, "one order charged, the other refunded"

    # the item is gone now: the next try is stopped before ordering
    open_product(loser, pid)
    expect(tid(loser, "out-of-stock")).to_be_visible()
    expect(tid(loser, "order-submit")).to_be_disabled()


def test_admin_sees_products_sagas_alerts_and_can_edit_stock(
    page: Page, admin: ApiUser, gateway: str, product, settings, shots
) -> None:
    pid = product(stock=3, price="8.00")
    shopper = register(gateway, tag="adminview")
    shopper.deposit(50)
    order_id = shopper.place(pid)
    shopper.wait_terminal(order_id)

    sign_in(page, settings.admin_email, settings.effective_admin_password)
    expect(tid(page, "nav-admin")).to_be_visible()
    tid(page, "nav-admin").click()
    expect(page).to_have_url(re.compile(r"/admin$"))

    products = tid(page, "admin-products")
    row = products.locator(f'[data-testid="admin-product-row"][data-product-id="{pid}"]')
    expect(row).to_be_visible()
    saga = tid(page, "admin-sagas").locator(f'[data-testid="saga-row"][data-order-id="{order_id}"]')
    expect(saga).to_have_attribute("data-status", "PLACED")
    expect(saga.get_by_test_id("saga-step").first).to_have_text("ORDER_INITIATED")
    alerts = tid(page, "admin-alerts")
    expect(alerts).to_be_visible()
    expect(alerts.locator('[data-testid="alert-row"], [data-testid="alerts-empty"]').first).to_be_visible()
    for section, item in (("admin-dead-letters", "dead-letter"), ("admin-mail", "mail"), ("admin-sms", "sms")):
        items = tid(page, section).locator(
            f'[data-testid="{item}-row"], [data-testid="{item}-item"], '
            f'[data-testid="{item}-empty"], [data-testid="{item}s-empty"]'
        )
        expect(items.first).to_be_visible()
    for section in ("admin-products", "admin-sagas", "admin-alerts", "admin-dead-letters", "admin-mail", "admin-sms"):
        expect(tid(page, f"{section}-error")).to_be_hidden()
    shots.take(page, "admin")

    # the in-page section links scroll; they do not re-render the page
    tid(page, "view").evaluate("el => { el.dataset.marker = 'same' }")
    page.get_by_role("link", name="Dead letters").click()
    expect(page).to_have_url(re.compile(r"/admin#adm-dlq$"))
    expect(tid(page, "view")).to_have_attribute("data-marker", "same")

    # stock editing
    row.get_by_test_id("stock-input").fill("9")
    row.get_by_test_id("stock-save").click()
    expect(row.get_by_test_id("stock-message")).to_have_text("Saved: 9.")
    assert httpx.get(f"{gateway}/api/products/{pid}").json()["availableCount"] == 9

    # a new product
    new_id = f"ui-{order_id[:8]}"
    tid(page, "new-product-id").fill(new_id)
    tid(page, "new-product-name").fill("UI Test Mug")
    tid(page, "new-product-type").fill("kitchen")
    tid(page, "new-product-price").fill("14.90")
    tid(page, "new-product-stock").fill("4")
    tid(page, "create-product-submit").click()
    expect(tid(page, "create-product-message")).to_contain_text(new_id)
    expect(products.locator(f'[data-testid="admin-product-row"][data-product-id="{new_id}"]')).to_be_visible()
    created = httpx.get(f"{gateway}/api/products/{new_id}").json()
    assert created["price"] == 14.9 and created["availableCount"] == 4


def test_cancel_from_the_order_page_shows_canceling_then_canceled_live(
    new_context, gateway: str, product, stack: Stack, shots
) -> None:
    """A placed order canceled from its page: a confirmation first, then CANCELING (held there while
    Payment is down) and CANCELED, live on the reopened stream, with what was undone."""
    pid = product(stock=3, price="6.50")
    user = register(gateway, tag="cancel")
    user.deposit(50)
    page = new_context().new_page()
    sign_in(page, user.email, user.password)
    open_product(page, pid)
    tid(page, "quantity").fill("2")
    expect(tid(page, "quote-total")).to_contain_text("13.00")
    expect(tid(page, "order-submit")).to_be_enabled()
    tid(page, "order-submit").click()
    expect(page).to_have_url(ORDER_URL)
    expect(tid(page, "order-status")).to_have_attribute("data-status", "PLACED", timeout=SAGA_TIMEOUT_MS)
    expect(tid(page, "live-indicator")).to_have_attribute("data-state", "done")
    order_id = page.url.rsplit("/", 1)[1]
    assert httpx.get(f"{gateway}/api/products/{pid}").json()["availableCount"] == 1

    # the Cancel button asks first; "No" keeps the order
    cancel = tid(page, "order-cancel")
    expect(cancel).to_be_visible()
    expect(tid(page, "cancel-outcome")).to_be_hidden()
    cancel.click()
    expect(tid(page, "cancel-confirm")).to_be_visible()
    expect(tid(page, "cancel-confirm-text")).to_contain_text("13.00")
    tid(page, "cancel-confirm-no").click()
    expect(tid(page, "cancel-confirm")).to_be_hidden()
    expect(cancel).to_be_visible()
    assert user.get(f"/api/orders/{order_id}").json()["orderStatus"] == "PLACED"

    # "Yes": CANCELING, held there while Payment is down, then CANCELED, live
    stack.hold("payment")
    try:
        cancel.click()
        with page.expect_request(is_stream):  # the cancel reopens the live stream
            tid(page, "cancel-confirm-yes").click()
        expect(tid(page, "order-status")).to_have_attribute("data-status", "CANCELING")
        expect(tid(page, "order-status")).to_have_text("Canceling")
        expect(tid(page, "live-indicator")).to_have_attribute("data-state", "live")
        expect(tid(page, "cancel-outcome")).to_have_attribute("data-state", "canceling")
        expect(cancel).to_be_hidden()
        expect(tid(page, "cancel-confirm")).to_be_hidden()
        shots.take(page, "order-canceling", full_page=False)
    finally:
        stack.release("payment")
    expect(tid(page, "order-status")).to_have_attribute("data-status", "CANCELED", timeout=SAGA_TIMEOUT_MS)
    expect(tid(page, "live-indicator")).to_have_attribute("data-state", "done")
    outcome = tid(page, "cancel-outcome")
    expect(outcome).to_have_attribute("data-state", "canceled")
    expect(outcome.get_by_test_id("cancel-refund")).to_have_attribute("data-refund", "REFUND_DONE")
    expect(outcome.get_by_test_id("cancel-refund")).to_contain_text("13.00 was refunded to your wallet")
    expect(outcome.get_by_test_id("cancel-stock")).to_contain_text("The stock was given back")
    expect(cancel).to_be_hidden()
    expect(tid(page, "fail-reason")).to_be_hidden()
    expect(page.locator('[data-testid="timeline-step"]:not([data-pending])').last).to_have_attribute(
        "data-status", "CANCELED"
    )
    events = step_attrs(page, "data-event")
    assert "ORDER_CANCEL_REQUESTED" in events and "REFUND_DONE" in events, events
    shots.take(page, "order-canceled", full_page=False, publish_as="order-canceled.png")
    assert user.balance() == 50, "the payment was refunded"
    assert httpx.get(f"{gateway}/api/products/{pid}").json()["availableCount"] == 3, "the stock is back"

    tid(page, "nav-orders").click()
    row = page.locator(f'[data-testid="order-row"][data-order-id="{order_id}"]')
    expect(row).to_have_attribute("data-status", "CANCELED")


def test_a_cancel_before_the_charge_says_nothing_was_charged(page: Page, gateway: str, product, stack: Stack) -> None:
    """An order the wallet cannot pay for (sent through the API: the storefront would not offer it),
    canceled while Payment is down: CANCELED with nothing charged and no stock to give back."""
    pid = product(stock=2, price="40.00")
    user = register(gateway, tag="cancel-early")
    user.deposit(5)
    sign_in(page, user.email, user.password)
    stack.hold("payment")
    try:
        oid = user.place(pid)
        page.goto(f"/orders/{oid}")
        expect(tid(page, "order-status")).to_have_attribute("data-status", "INITIATED")
        expect(tid(page, "live-indicator")).to_have_attribute("data-state", "live")
        tid(page, "order-cancel").click()
        tid(page, "cancel-confirm-yes").click()
        expect(tid(page, "order-status")).to_have_attribute("data-status", "CANCELING")
    finally:
        stack.release("payment")
    expect(tid(page, "order-status")).to_have_attribute("data-status", "CANCELED", timeout=SAGA_TIMEOUT_MS)
    refund = tid(page, "cancel-refund")
    expect(refund).to_have_attribute("data-refund", "")
    expect(refund).to_have_text("Nothing was charged.")
    expect(tid(page, "cancel-stock")).to_have_count(0)
    expect(tid(page, "cancel-outcome")).to_have_text("Your order is canceled.Nothing was charged.")
    expect(tid(page, "fail-reason")).to_be_hidden()
    expect(tid(page, "order-cancel")).to_be_hidden()
    assert user.balance() == 5


def test_admin_ships_and_delivers_an_order(new_context, gateway: str, product, settings, shots) -> None:
    pid = product(stock=5, price="11.00")
    shopper = register(gateway, tag="ship")
    shopper.deposit(30)
    order_id = shopper.place(pid, 2)
    assert shopper.wait_terminal(order_id)["orderStatus"] == "PLACED"

    page = new_context().new_page()
    sign_in(page, settings.admin_email, settings.effective_admin_password)
    page.goto("/admin")
    sagas = tid(page, "admin-sagas")
    row = sagas.locator(f'[data-testid="saga-row"][data-order-id="{order_id}"]')
    expect(row).to_have_attribute("data-status", "PLACED")

    # filtered by status: only placed orders, each with its Ship button
    tid(page, "saga-filter").select_option("PLACED")
    expect(row).to_be_visible()
    expect(sagas.locator('[data-testid="saga-row"]:not([data-status="PLACED"])')).to_have_count(0)
    expect(row.get_by_test_id("deliver")).to_have_count(0)

    row.get_by_test_id("ship").click()
    expect(row).to_have_attribute("data-status", "ON_THE_WAY")
    expect(tid(page, "admin-sagas-error")).to_contain_text("shipped")
    expect(row.get_by_test_id("ship")).to_have_count(0)
    expect(row.get_by_test_id("deliver")).to_be_visible()
    row.scroll_into_view_if_needed()
    shots.take(page, "admin-shipped", full_page=False, publish_as="admin-ship.png")
    assert shopper.get(f"/api/orders/{order_id}").json()["orderStatus"] == "ON_THE_WAY"

    row.get_by_test_id("deliver").click()
    expect(row).to_have_attribute("data-status", "DELIVERED")
    expect(row.get_by_test_id("deliver")).to_have_count(0)
    expect(row.get_by_test_id("ship")).to_have_count(0)
    assert shopper.get(f"/api/orders/{order_id}").json()["orderStatus"] == "DELIVERED"

    tid(page, "saga-filter").select_option("DELIVERED")
    expect(row).to_have_attribute("data-status", "DELIVERED")
    expect(sagas.locator('[data-testid="saga-row"]:not([data-status="DELIVERED"])')).to_have_count(0)
    tid(page, "saga-filter").select_option("PLACED")
    expect(row).to_have_count(0)

    # the shopper sees it delivered, with no Cancel button, and the steps on the timeline
    mine = new_context().new_page()
    sign_in(mine, shopper.email, shopper.password)
    mine.goto(f"/orders/{order_id}")
    expect(tid(mine, "order-status")).to_have_attribute("data-status", "DELIVERED")
    expect(tid(mine, "order-status")).to_have_text("Delivered")
    expect(tid(mine, "live-indicator")).to_have_attribute("data-state", "done")
    expect(tid(mine, "order-cancel")).to_be_hidden()
    expect(mine.locator('[data-testid="timeline-step"]:not([data-pending])').last).to_have_attribute(
        "data-event", "ORDER_DELIVERED"
    )
    events = step_attrs(mine, "data-event")
    assert "ORDER_SHIPPED" in events, events


def test_admin_replays_a_dead_letter(page: Page, admin: ApiUser, settings, shots) -> None:
    from aiokafka import AIOKafkaProducer

    key = f"ui-dlt-{uuid.uuid4().hex[:10]}"

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic, value=b"[1, 2, 3]", key=key.encode())
        finally:
            await producer.stop()

    run_sync(send())  # no handler can read it: each consumer dead-letters it
    deadline = time.monotonic() + 60
    while not any(d["key"] == key for d in admin.get("/api/admin/dead-letters").json()):
        assert time.monotonic() < deadline, "the message was not dead-lettered"
        time.sleep(0.5)  # the API, not the page: the admin page refreshes on demand

    sign_in(page, settings.admin_email, settings.effective_admin_password)
    page.goto("/admin")
    rows = tid(page, "admin-dead-letters").locator('[data-testid="dead-letter-row"]', has_text=key)
    expect(rows.first).to_be_visible()
    dl_id = rows.first.get_attribute("data-id")
    row = page.locator(f'[data-testid="dead-letter-row"][data-id="{dl_id}"]')
    expect(row.get_by_test_id("replay")).to_have_text(re.compile(r"^Replay\b"))
    row.get_by_test_id("replay").click()
    expect(tid(page, "admin-dead-letters-error")).to_contain_text(f"Message #{dl_id} was put back")
    expect(row.get_by_test_id("replay")).to_contain_text("Replay again")
    tid(page, "admin-dead-letters").scroll_into_view_if_needed()
    shots.take(page, "admin-dead-letters", full_page=False)


def test_a_shopper_cannot_open_the_admin_page(page: Page, gateway: str) -> None:
    user = register(gateway, tag="notadmin")
    sign_in(page, user.email, user.password)
    expect(tid(page, "nav-admin")).to_be_hidden()
    page.goto("/admin")
    expect(tid(page, "admin-denied")).to_contain_text("administrators")
    expect(tid(page, "admin-products")).to_be_hidden()


def test_rate_limit_message_says_how_long_to_wait(page: Page, gateway: str, settings) -> None:
    user = register(gateway, tag="limited")
    sign_in(page, user.email, user.password)
    page.goto("/wallet")
    expect(tid(page, "wallet-balance")).to_have_attribute("data-amount", "0")
    # the limit is per user (the token's subject), whichever token: use it up from outside
    limit = settings.rate_user_per_10s
    codes = [r.status_code for r in user.burst("/api/wallet", limit + 20)]
    assert 429 in codes, "the gateway did not limit the burst"
    tid(page, "topup-amount").fill("5")
    tid(page, "topup-submit").click()
    expect(tid(page, "topup-error")).to_have_text(re.compile(r"^Too many requests: wait \d+ seconds and try again\.$"))


def test_phone_width_and_keyboard_only(new_context, gateway: str, product, shots) -> None:
    pid = product(stock=4, price="3.20")
    user = register(gateway, tag="phone")
    user.deposit(20)
    page = new_context(width=375, height=812).new_page()

    def no_sideways_scroll() -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{page.url} is {width}px wide on a 375px screen"

    page.goto("/")
    expect(page.locator(f'[data-testid="product-card"][data-product-id="{pid}"]')).to_be_visible()
    no_sideways_scroll()
    shots.take(page, "phone-storefront", full_page=False)

    # keyboard only: the skip link comes first, then real links and buttons, with a visible focus
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    seen = []
    for _ in range(8):
        page.keyboard.press("Tab")
        seen.append(
            page.evaluate("""() => {
            const el = document.activeElement;
            const style = getComputedStyle(el);
            return {tag: el.tagName, visible: style.outlineStyle !== 'none' && style.outlineWidth !== '0px'};
        }""")
        )
    assert all(s["tag"] in ("A", "BUTTON", "INPUT", "SELECT", "TEXTAREA", "SUMMARY") for s in seen), seen
    assert all(s["visible"] for s in seen), f"focus not visible: {seen}"

    # sign in and order with the keyboard only
    page.goto("/signin")
    tid(page, "signin-email").focus()
    page.keyboard.type(user.email)
    page.keyboard.press("Tab")
    page.keyboard.type(user.password)
    page.keyboard.press("Enter")
    expect(tid(page, "user-email")).to_have_text(user.email)
    open_product(page, pid)
    no_sideways_scroll()
    expect(tid(page, "order-submit")).to_be_enabled()
    tid(page, "order-submit").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(ORDER_URL)
    expect(tid(page, "order-status")).to_have_attribute("data-status", "PLACED", timeout=SAGA_TIMEOUT_MS)
    no_sideways_scroll()
    shots.take(page, "phone-order")
    page.goto("/wallet")
    expect(page.locator('[data-testid="ledger-row"]')).to_have_count(2)
    no_sideways_scroll()
