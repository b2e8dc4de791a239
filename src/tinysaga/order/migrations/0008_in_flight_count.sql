-- ADR 69: the overload bound's count of the sagas in flight (ADR 50, 52), how many orders are
-- unsettled and the median one's age, always read through the partial index orders_unsettled.
-- Planned as a plain query, it turned into a sequential scan of the whole table at a few thousand
-- orders (the index's dead entries and a stale row estimate priced the index out), at up to 5 ms a
-- call, 27 calls a second under load. Here the function's own setting takes the sequential scan out
-- of its plan and nothing else's; PL/pgSQL keeps the plan for the connection. The status list is
-- the index's predicate, which is domain.UNSETTLED (a unit test holds the three together).
CREATE FUNCTION sagas_in_flight(OUT n bigint, OUT median_age float8)
    LANGUAGE plpgsql STABLE
    SET enable_seqscan = off
AS $$
BEGIN
    SELECT count(*),
           coalesce(extract(epoch FROM now() - percentile_disc(0.5) WITHIN GROUP (ORDER BY created_at)), 0)::float8
      INTO n, median_age
      FROM orders
     WHERE order_status IN ('INITIATED', 'PAYMENT_DONE', 'REFUND_INITIATED', 'CANCELING');
END
$$;
