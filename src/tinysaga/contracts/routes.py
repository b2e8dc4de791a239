"""The internal HTTP routes one service calls on another (never routed by the gateway): part of
the contract between services, like the events."""

from __future__ import annotations

from urllib.parse import quote

WALLET_PAYMENTS_BATCH = "/internal/payments/batch"  # Payment -> Wallet: the debits of a poll
WALLET_REFUNDS = "/internal/refunds"  # Payment -> Wallet: a refund or a void
# Payment, Inventory -> Order, before they compensate an ORDER_TIMED_OUT or ORDER_CANCEL_REQUESTED:
# did Order really ask for it (its history holds that event)? {"orderId", "eventName", "requested"}
ORDER_REQUESTED = "/internal/orders/{orderId}/requested/{eventName}"
WALLET_BALANCE = "/internal/wallets/{userId}"  # Order -> Wallet (the checkout quote)
PRODUCT = "/api/products/{productId}"  # Order -> Inventory (price and stock)
# Order -> every participant of the saga (the saga map): what the participant itself did for the
# order, read-only, from its own rows: {"service", "orderId", "records": [contracts.records]}
ORDER_RECORDS = "/internal/orders/{orderId}/records"


def path(route: str, **params: str) -> str:
    """The route with its parameters filled in, each escaped as one path segment."""
    return route.format(**{k: quote(v, safe="") for k, v in params.items()})
