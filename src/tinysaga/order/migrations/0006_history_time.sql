-- Issue 17: the sagas that ended in the last minute (`GET /api/admin/sagas/summary`, `./tiny-saga
-- top`) are found by the time of their history rows. The history is written in time order, so a
-- BRIN index is enough, and costs next to nothing on the saga's writes.
CREATE INDEX order_history_at ON order_history USING brin (at);
