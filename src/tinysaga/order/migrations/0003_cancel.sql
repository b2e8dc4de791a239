-- ADR 13: while an order is CANCELING, whether each side of the cancel is settled (Payment: nothing
-- charged any more; Inventory: no stock held any more). It is CANCELED once both are.
ALTER TABLE orders
    ADD COLUMN payment_settled boolean NOT NULL DEFAULT false,
    ADD COLUMN stock_settled   boolean NOT NULL DEFAULT false;
