CREATE TABLE orders (
    order_id         uuid PRIMARY KEY,
    user_id          text NOT NULL,
    product_id       text NOT NULL,
    product_quantity integer NOT NULL CHECK (product_quantity BETWEEN 1 AND 100),
    price            numeric(14, 2) NOT NULL,
    total_amount     numeric(14, 2) NOT NULL,
    currency         text NOT NULL,
    payment_type     text NOT NULL,
    order_status     text NOT NULL,
    fail_reason      text,
    refund_status    text,
    status_info      text NOT NULL DEFAULT '',
    transaction_id   text,
    idempotency_key  text,
    request_hash     text,
    version          integer NOT NULL DEFAULT 1,
    deadline_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX orders_user_idem ON orders (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX orders_user_time ON orders (user_id, created_at DESC, order_id DESC);
CREATE INDEX orders_in_flight ON orders (deadline_at) WHERE order_status IN ('INITIATED', 'PAYMENT_DONE', 'REFUND_INITIATED');

CREATE TABLE order_history (
    id           bigserial PRIMARY KEY,
    order_id     uuid NOT NULL REFERENCES orders(order_id),
    order_status text NOT NULL,
    status_info  text NOT NULL,
    event_name   text NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX order_history_order ON order_history (order_id, id);

-- Critical cases an operator must see (a refund that failed).
CREATE TABLE alerts (
    id         bigserial PRIMARY KEY,
    order_id   uuid NOT NULL,
    user_id    text NOT NULL,
    kind       text NOT NULL,
    detail     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, kind)
);
