-- Transactional outbox: rows are written in the same transaction as the state change that causes
-- them; the relay publishes them to Kafka and deletes them.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    topic       text        NOT NULL,
    key         text        NOT NULL,
    event_name  text        NOT NULL,
    payload     bytea       NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Idempotent consumer: an event id is recorded in the same transaction as its effect.
CREATE TABLE processed_events (
    event_id     uuid PRIMARY KEY,
    event_name   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
