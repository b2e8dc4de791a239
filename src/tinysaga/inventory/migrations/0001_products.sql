CREATE TABLE products (
    product_id      text PRIMARY KEY,
    name            text NOT NULL,
    product_type    text NOT NULL,
    price           numeric(14, 2) NOT NULL CHECK (price > 0),
    available_count integer NOT NULL CHECK (available_count >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per order that reached inventory: RESERVED, REJECTED (not enough stock), RELEASED
-- (compensated after a timeout) or CANCELLED (the timeout came first: a late payment is not reserved).
CREATE TABLE reservations (
    order_id   text PRIMARY KEY,
    product_id text NOT NULL,
    quantity   integer NOT NULL CHECK (quantity > 0),
    status     text NOT NULL CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED', 'CANCELLED')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Stock set by an admin, kept as a log so the stock invariant can be checked.
CREATE TABLE stock_changes (
    id          bigserial PRIMARY KEY,
    product_id  text NOT NULL REFERENCES products(product_id),
    new_count   integer NOT NULL,
    changed_by  text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
