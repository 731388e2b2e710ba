-- Closed hourly rollups (issue 4, docs/rollups.md): what the rollup agent emitted when an
-- operator's watermark passed an hour's end + grace. Append-only like `cdr` (DESIGN.md §4.3): a
-- closed hour is never updated or deleted; a late event is a new row, the next revision of that
-- hour (a delta), and an hour's value is the sum of its revisions. Keyed by (operator, hour,
-- revision): storing a re-emitted close again is a no-op (rollup_store.append_closes).

CREATE FUNCTION reject_rollup_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'P0001', HINT = 'a correction of a closed hour is its next revision';
END
$$;

CREATE TABLE rollup_closed (
    operator_id         text        NOT NULL,
    -- Start of the hour window [hour_start, hour_start + 1 h), on a whole UTC hour.
    hour_start          timestamptz NOT NULL
        CHECK (date_trunc('hour', hour_start AT TIME ZONE 'UTC') = hour_start AT TIME ZONE 'UTC'),
    revision            integer     NOT NULL CHECK (revision >= 0),
    closed_by           text        NOT NULL CHECK (closed_by IN ('event', 'tick', 'correction')),
    -- The operator's currency: every emitted close has one (an empty hour carries the
    -- operator's currency, known from its first entry, which precedes any close).
    currency            char(3)     NOT NULL,
    -- Original CDRs (record_type = 'CDR') by status; records is their number.
    count_delivered     bigint      NOT NULL CHECK (count_delivered >= 0),
    count_undelivered   bigint      NOT NULL CHECK (count_undelivered >= 0),
    count_expired       bigint      NOT NULL CHECK (count_expired >= 0),
    count_rejected      bigint      NOT NULL CHECK (count_rejected >= 0),
    count_unknown       bigint      NOT NULL CHECK (count_unknown >= 0),
    records             bigint      NOT NULL,
    billable_records    bigint      NOT NULL CHECK (billable_records BETWEEN 0 AND records),
    billable_segments   bigint      NOT NULL CHECK (billable_segments >= 0),
    amount_minor        bigint      NOT NULL,
    tax_minor           bigint      NOT NULL,
    adjustments_void    bigint      NOT NULL CHECK (adjustments_void >= 0),
    adjustments_correct bigint      NOT NULL CHECK (adjustments_correct >= 0),
    -- Smallest / largest chain_seq in the hour (or in the delta); NULL for an empty one.
    first_chain_seq     bigint      CHECK (first_chain_seq >= 1),
    last_chain_seq      bigint      CHECK (last_chain_seq >= first_chain_seq),
    -- The operator's chain head and watermark when this was emitted.
    chain_head_seq      bigint      NOT NULL CHECK (chain_head_seq >= 1),
    chain_head_hash     char(64)    NOT NULL CHECK (chain_head_hash ~ '^[0-9a-f]{64}$'),
    watermark           timestamptz NOT NULL,
    -- Not part of the emitted value: when this row was committed.
    stored_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator_id, hour_start, revision),
    CHECK (records = count_delivered + count_undelivered + count_expired + count_rejected + count_unknown),
    CHECK ((first_chain_seq IS NULL) = (last_chain_seq IS NULL)),
    -- A revision >= 1 is always a correction delta (revision 0 of a backfilled hour may be one too).
    CHECK (revision = 0 OR closed_by = 'correction')
);

-- Reads by day across operators (reconciliation: who had closes in a range).
CREATE INDEX rollup_closed_hour ON rollup_closed (hour_start);

CREATE TRIGGER rollup_closed_append_only_rows BEFORE UPDATE OR DELETE ON rollup_closed
    FOR EACH ROW EXECUTE FUNCTION reject_rollup_mutation();
CREATE TRIGGER rollup_closed_append_only_truncate BEFORE TRUNCATE ON rollup_closed
    FOR EACH STATEMENT EXECUTE FUNCTION reject_rollup_mutation();

GRANT SELECT, INSERT ON rollup_closed TO {app_role};
