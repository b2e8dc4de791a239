"""Every backoff of the product, in one place, on tenacity's wait strategies (exponential, capped;
full jitter where many callers may retry together). Loops that retry a call use tenacity's
`AsyncRetrying` with these; the consumer loop and the notification schedule, whose retries outlive
one call (a dead letter after N failures, a row's next attempt stored in the database), ask for the
pause of attempt N."""

from __future__ import annotations

from types import SimpleNamespace

from tenacity import wait_exponential, wait_random_exponential
from tenacity.wait import wait_base

# A handler hit an outage (database or network down): wait it out, however long; at most 5 s apart.
OUTAGE = wait_exponential(multiplier=0.2, max=5.0)
# A handler failed for another reason: 0.2, 0.4, ... s between its few attempts (then a dead letter).
HANDLER = wait_exponential(multiplier=0.2, max=5.0)
# A notification a channel could not take: 0.5, 1, 2, ... s, at most a minute apart.
NOTIFICATION = wait_exponential(multiplier=0.5, max=60.0)


def wallet_backoff(base_seconds: float, cap_seconds: float) -> wait_base:
    """Payment -> Wallet: exponential with full jitter (a uniform pause below base * 2^(n-1))."""
    return wait_random_exponential(multiplier=base_seconds, max=cap_seconds)


def pause(strategy: wait_base, attempt: int) -> float:
    """The pause a strategy gives after failed attempt number `attempt` (1 for the first)."""
    return float(strategy(SimpleNamespace(attempt_number=max(1, attempt))))  # type: ignore[arg-type]


def outage_pause(outage: int) -> float:
    return pause(OUTAGE, outage)


def retry_pause(attempt: int) -> float:
    return pause(HANDLER, attempt)
