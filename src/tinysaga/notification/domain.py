"""Which events notify the user, and what they say. Pure."""

from __future__ import annotations

from tinysaga.contracts import events as ev


def notification_for(event: ev.Event) -> tuple[str, str] | None:
    """(type, message) for a notifiable event, else None."""
    amount = (
        f"{event.totalAmount:.2f} {event.currency}"
        if event.totalAmount is not None and event.currency
        else "the amount"
    )
    order = f"order {event.orderId}"
    name = event.name_canonical
    if name == ev.PAYMENT_DONE:
        return "PAYMENT_DONE", f"We took {amount} from your wallet for {order}."
    if name == ev.PAYMENT_FAIL:
        why = (
            "there is not enough money in your wallet"
            if event.failReason == ev.INSUFFICIENT_FUND
            else "the payment service had a problem"
        )
        return "PAYMENT_FAILED", f"Payment for {order} failed: {why}. Nothing was charged."
    if name == ev.INVENTORY_RESERVED:
        return "ORDER_PLACED", f"Your {order} is placed: {event.productQuantity} x {event.productId}."
    if name == ev.INVENTORY_INSUFFICIENT:
        return (
            "INVENTORY_INSUFFICIENT",
            f"Sorry, {event.productId} ran out of stock for {order}. A refund of {amount} is on its way.",
        )
    if name == ev.REFUND_DONE:
        return "REFUND_DONE", f"We refunded {amount} to your wallet for {order}."
    if name == ev.REFUND_FAILED:
        return "REFUND_FAILED", f"The refund for {order} failed. Our team has been alerted and will fix it."
    if name == ev.ORDER_TIMED_OUT:
        return "ORDER_TIMED_OUT", f"Your {order} could not be completed in time; any payment will be refunded."
    return None
