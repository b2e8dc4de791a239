-- One row per order Payment has acted on.
--   CHARGED        the wallet was debited
--   DECLINED       insufficient funds, nothing moved
--   VOID_PENDING   the wallet could not be reached: a debit may have landed; it must be voided
--   VOIDED         the void was done (the wallet refunded it or recorded that nothing was taken)
--   REFUND_PENDING refund asked for (REFUND_INITIATED published), not yet confirmed by the wallet
--   REFUNDED       the money went back
--   REFUND_FAILED  the refund could not be done: critical, an operator must act
CREATE TABLE payments (
    order_id       text PRIMARY KEY,
    user_id        text NOT NULL,
    amount         numeric(14, 2) NOT NULL,
    currency       text NOT NULL,
    status         text NOT NULL,
    transaction_id text,
    detail         text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_void_pending ON payments (updated_at) WHERE status = 'VOID_PENDING';
