-- Issue 17: the bulk replay of dead letters filters by event name and shows how often each was
-- replayed before.
ALTER TABLE dead_letters
    ADD COLUMN event_name   text,
    ADD COLUMN replay_count integer NOT NULL DEFAULT 0;
UPDATE dead_letters SET replay_count = 1 WHERE replayed_at IS NOT NULL;
UPDATE dead_letters SET event_name = substring(payload FROM '"eventName"\s*:\s*"([A-Za-z_]{1,64})"')
    WHERE payload_encoding = 'utf-8';
CREATE INDEX dead_letters_unreplayed ON dead_letters (id) WHERE replay_count = 0;
