-- Stuck sagas (ADR 40): the orders still in flight, by status and by when they entered it, for the
-- operator's list of sagas past their status's deadline and the gauges read at each scrape.
CREATE INDEX orders_unsettled ON orders (order_status, updated_at)
    WHERE order_status IN ('INITIATED', 'PAYMENT_DONE', 'REFUND_INITIATED', 'CANCELING');
