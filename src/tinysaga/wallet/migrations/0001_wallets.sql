CREATE TABLE wallets (
    user_id    text PRIMARY KEY,
    balance    numeric(14, 2) NOT NULL DEFAULT 0 CHECK (balance >= 0),
    currency   text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The ledger. PAYMENT and REFUND rows are unique per order: that is what makes a retried debit
-- or refund a no-op, and what lets a refund (or a void) block a debit that arrives late.
CREATE TABLE transactions (
    transaction_id   uuid PRIMARY KEY,
    user_id          text NOT NULL REFERENCES wallets(user_id),
    order_id         text,
    transaction_type text NOT NULL CHECK (transaction_type IN ('DEPOSIT', 'PAYMENT', 'REFUND')),
    payment_status   text NOT NULL,
    amount           numeric(14, 2) NOT NULL CHECK (amount >= 0),
    currency         text NOT NULL,
    description      text NOT NULL DEFAULT '',
    idempotency_key  text,
    request_hash     text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX transactions_order_kind ON transactions (order_id, transaction_type) WHERE order_id IS NOT NULL;
CREATE UNIQUE INDEX transactions_user_idem ON transactions (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX transactions_user_time ON transactions (user_id, created_at DESC);
