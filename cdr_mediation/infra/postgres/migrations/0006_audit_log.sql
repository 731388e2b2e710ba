-- The audit log and the transactional outbox (issue 7; docs/audit.md).
--
-- audit_log: one hash-chained, append-only row for every admin write, export transition and
-- verification. The entry hash is computed by the writer (domain/audit.py: SHA-256 over the
-- RFC 8785 bytes of the entry); PostgreSQL has no RFC 8785 serialiser, and a second
-- implementation in PL/pgSQL would be a second contract to keep byte-equal. What the database
-- guarantees instead is the shape of the chain: appends are serialised by one transaction-level
-- advisory lock, and the trigger below refuses an entry that does not continue the head (next
-- audit_seq, prev_hash = the head's entry_hash) or whose time is not this transaction's database
-- time. A wrong entry_hash is what `cdrmed audit verify` (and any outside verifier) finds.
--
-- outbox: events to Kafka decided in the same transaction as the business row and its audit row,
-- published later by the relay (agents/outbox_relay.py). Its ids are assigned under the same lock,
-- so id order is commit order and the relay can publish in id order without ever passing over a
-- row that is still being committed.

-- One lock for audit appends and outbox inserts: a transaction that writes both takes one lock,
-- so two such transactions can never wait for each other's second lock (no deadlock), whatever
-- order they write in. Held until commit or rollback. The key is an arbitrary constant that
-- nothing else in this database uses (ASCII "cdraudit").
CREATE FUNCTION audit_outbox_lock() RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock(7161975070332840308)
$$;

CREATE FUNCTION reject_audit_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'P0001', HINT = 'the audit log and the outbox are written once; record a new entry';
END
$$;

CREATE TABLE audit_log (
    audit_seq   bigint   PRIMARY KEY CHECK (audit_seq >= 1),
    -- The database clock when the entry was appended, as the exact string that was hashed
    -- (UTC, microseconds). Text, not timestamptz: what an auditor reads is what was hashed,
    -- whatever their session's time zone or client library. Fixed width, so it sorts as time.
    at          text     NOT NULL CHECK (at ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$'),
    actor       text     NOT NULL CHECK (actor <> ''),
    actor_role  text     NOT NULL CHECK (actor_role IN ('system', 'admin', 'regulator', 'auditor')),
    action      text     NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    request_id  text     NOT NULL CHECK (request_id <> ''),
    refs        jsonb    NOT NULL CHECK (jsonb_typeof(refs) = 'object'),
    detail      jsonb    NOT NULL CHECK (jsonb_typeof(detail) = 'object'),
    prev_hash   char(64) NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    entry_hash  char(64) NOT NULL CHECK (entry_hash ~ '^[0-9a-f]{64}$'),
    -- At most one successor per entry: even a writer that bypassed the lock cannot fork the chain.
    UNIQUE (prev_hash)
);

CREATE INDEX audit_log_refs ON audit_log USING gin (refs jsonb_path_ops);
CREATE INDEX audit_log_action ON audit_log (action, audit_seq);

-- Entry n continues entry n-1, and its time is the database's, read inside this transaction
-- (between its start and now): a writer cannot back-date an entry or use its own clock.
CREATE FUNCTION check_audit_link() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    head_seq  bigint;
    head_hash text;
    stamped   timestamptz;
BEGIN
    -- Taken again here (re-entrant) so that a plain INSERT is serialised like append_audit's.
    PERFORM audit_outbox_lock();
    SELECT audit_seq, entry_hash INTO head_seq, head_hash FROM audit_log ORDER BY audit_seq DESC LIMIT 1;
    IF NOT FOUND THEN
        head_seq := 0;
        head_hash := repeat('0', 64);
    END IF;
    IF NEW.audit_seq <> head_seq + 1 THEN
        RAISE EXCEPTION 'audit entry % does not continue the log: its head is %', NEW.audit_seq, head_seq
            USING ERRCODE = 'P0001';
    END IF;
    IF NEW.prev_hash <> head_hash THEN
        RAISE EXCEPTION 'audit entry %: prev_hash % is not the head''s entry_hash %', NEW.audit_seq, NEW.prev_hash,
            head_hash USING ERRCODE = 'P0001';
    END IF;
    stamped := NEW.at::timestamptz;
    IF stamped < now() OR stamped > clock_timestamp() THEN
        RAISE EXCEPTION 'audit entry %: at % is not the database time of this transaction', NEW.audit_seq, NEW.at
            USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_log_link BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION check_audit_link();
CREATE TRIGGER audit_log_append_only_rows BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION reject_audit_mutation();
CREATE TRIGGER audit_log_append_only_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION reject_audit_mutation();

GRANT SELECT, INSERT ON audit_log TO {app_role};
GRANT EXECUTE ON FUNCTION audit_outbox_lock() TO {app_role};


CREATE SEQUENCE outbox_id_seq AS bigint;

CREATE TABLE outbox (
    id            bigint      PRIMARY KEY,
    topic         text        NOT NULL CHECK (topic ~ '^[A-Za-z0-9._-]{1,249}$'),
    key           bytea,
    value         bytea       NOT NULL,
    -- Kafka headers: name → UTF-8 text. `outbox-id` is added by the relay (consumers dedup by it).
    headers       jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(headers) = 'object'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The one column that changes, once, from NULL to the time Kafka acknowledged the message:
    -- delivery state, not evidence (the message itself, and the audit row beside it, never change).
    published_at  timestamptz
);

ALTER SEQUENCE outbox_id_seq OWNED BY outbox.id;

-- What the relay reads: small, because published rows leave it.
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

-- The id is taken under the lock, held to commit: a row can only get an id once every row with a
-- smaller id is committed or rolled back. Any id the caller supplied is replaced.
CREATE FUNCTION assign_outbox_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.published_at IS NOT NULL THEN
        RAISE EXCEPTION 'an outbox row is published by the relay, not inserted as published' USING ERRCODE = 'P0001';
    END IF;
    PERFORM audit_outbox_lock();
    NEW.id := nextval('outbox_id_seq');
    -- Delivered at commit only (never for a rolled-back row); one per transaction.
    PERFORM pg_notify('cdr_outbox', '');
    RETURN NEW;
END
$$;

-- Only NULL → a time on published_at; everything else about a row is fixed once written.
CREATE FUNCTION check_outbox_publication() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.published_at IS NOT NULL OR NEW.published_at IS NULL
       OR (NEW.id, NEW.topic, NEW.key, NEW.value, NEW.headers, NEW.created_at)
          IS DISTINCT FROM (OLD.id, OLD.topic, OLD.key, OLD.value, OLD.headers, OLD.created_at) THEN
        RAISE EXCEPTION 'outbox row %: only its publication may be recorded, once', OLD.id USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER outbox_assign_id BEFORE INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION assign_outbox_id();
CREATE TRIGGER outbox_publication_only BEFORE UPDATE ON outbox
    FOR EACH ROW EXECUTE FUNCTION check_outbox_publication();
CREATE TRIGGER outbox_append_only_rows BEFORE DELETE ON outbox
    FOR EACH ROW EXECUTE FUNCTION reject_audit_mutation();
CREATE TRIGGER outbox_append_only_truncate BEFORE TRUNCATE ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION reject_audit_mutation();

GRANT SELECT, INSERT ON outbox TO {app_role};
GRANT UPDATE (published_at) ON outbox TO {app_role};
GRANT USAGE ON SEQUENCE outbox_id_seq TO {app_role};
