-- The dead-letter topic, kept for operators: list and replay.
CREATE TABLE dead_letters (
    id               bigserial PRIMARY KEY,
    dlt_partition    integer NOT NULL,
    dlt_offset       bigint NOT NULL,
    service          text NOT NULL,
    error            text NOT NULL,
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    message_key      text NOT NULL,
    payload          text NOT NULL,
    payload_encoding text NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    replayed_at      timestamptz,
    UNIQUE (dlt_partition, dlt_offset)
);
