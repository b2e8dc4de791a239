-- Contact details, learnt from USER_REGISTERED.
CREATE TABLE contacts (
    user_id text PRIMARY KEY,
    email   text,
    phone   text,
    name    text
);

-- One row per (order, type, channel): a redelivered event does not notify twice.
CREATE TABLE notifications (
    notification_id uuid PRIMARY KEY,
    user_id         text NOT NULL,
    order_id        text NOT NULL,
    type            text NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('EMAIL', 'SMS')),
    message         text NOT NULL,
    status          text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SENT', 'SKIPPED')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at         timestamptz,
    UNIQUE (order_id, type, channel)
);
CREATE INDEX notifications_user_time ON notifications (user_id, created_at DESC);
CREATE INDEX notifications_pending ON notifications (next_attempt_at) WHERE status = 'PENDING';

-- What the default SMS adapter "sends": a record per message.
CREATE TABLE sms_messages (
    id         bigserial PRIMARY KEY,
    notification_id uuid NOT NULL UNIQUE,
    to_number  text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
