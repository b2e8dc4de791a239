"""Order service: order creation, the order state machine, the timeout sweeper, live status (SSE)."""
