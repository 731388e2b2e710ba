-- CDRs: the system of record. Append-only (DESIGN.md §4.3): rows are never updated or deleted;
-- a correction is a new chain entry (VOID / CORRECT) that references the original.

CREATE FUNCTION reject_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'P0001', HINT = 'corrections are new chain entries (VOID/CORRECT)';
END
$$;

CREATE TABLE cdr (
    operator_id      text        NOT NULL,
    chain_seq        bigint      NOT NULL CHECK (chain_seq >= 1),
    record_type      text        NOT NULL CHECK (record_type IN ('CDR', 'VOID', 'CORRECT')),
    cdr_id           text        NOT NULL,
    dlr_id           text        NOT NULL,
    message_id       text        NOT NULL,
    tenant_id        text        NOT NULL,
    sender_id        text        NOT NULL,
    msisdn           text        NOT NULL,
    status           text        NOT NULL,
    submitted_at     timestamptz NOT NULL,
    done_at          timestamptz NOT NULL,
    segments         integer     NOT NULL CHECK (segments >= 0),
    billable         boolean     NOT NULL,
    unit_price_minor bigint      NOT NULL,
    amount_minor     bigint      NOT NULL,
    tax_minor        bigint      NOT NULL,
    currency         char(3)     NOT NULL,
    pricing_version  text        NOT NULL,
    error_code       text,
    smsc_id          text        NOT NULL,
    ref_cdr_id       text,
    ticket_ref       text,
    actor            text,
    prev_hash        char(64)    NOT NULL,
    record_hash      char(64)    NOT NULL,
    -- Not part of the hashed entry: when this row was committed, for lag metrics only.
    stored_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (operator_id, chain_seq),
    UNIQUE (cdr_id)
);

CREATE INDEX cdr_done_at ON cdr (operator_id, done_at);

CREATE TRIGGER cdr_append_only_rows BEFORE UPDATE OR DELETE ON cdr
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER cdr_append_only_truncate BEFORE TRUNCATE ON cdr
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();

GRANT USAGE ON SCHEMA public TO {app_role};
GRANT SELECT, INSERT ON cdr TO {app_role};
