-- ADR 42: the trace of the order (its creation, every step of its saga), when tracing was on and the
-- order's trace sampled; shown to the operator next to the order.
ALTER TABLE orders ADD COLUMN trace_id text;
