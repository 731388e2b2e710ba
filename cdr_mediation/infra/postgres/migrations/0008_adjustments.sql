-- Adjustments (issue 7; domain/adjustment.py; docs/adjustments.md).
--
-- 1. Rollups net adjustments into their hour: a VOID or CORRECT of a record whose hour is
--    already closed is a correction delta that takes the superseded version out, so a delta's
--    counts may be negative. A revision 0 still holds every version of its records and is never
--    negative; that is what stays checked.
ALTER TABLE rollup_closed
    DROP CONSTRAINT rollup_closed_count_delivered_check,
    DROP CONSTRAINT rollup_closed_count_undelivered_check,
    DROP CONSTRAINT rollup_closed_count_expired_check,
    DROP CONSTRAINT rollup_closed_count_rejected_check,
    DROP CONSTRAINT rollup_closed_count_unknown_check,
    DROP CONSTRAINT rollup_closed_check,  -- billable_records BETWEEN 0 AND records (named by PostgreSQL)
    DROP CONSTRAINT rollup_closed_billable_segments_check,
    ADD CONSTRAINT rollup_closed_base_not_negative CHECK (
        revision > 0 OR (count_delivered >= 0 AND count_undelivered >= 0 AND count_expired >= 0
                         AND count_rejected >= 0 AND count_unknown >= 0
                         AND billable_records BETWEEN 0 AND records AND billable_segments >= 0));

-- 2. Adjustment requests as the portal accepted them. One row per Idempotency-Key: a replay
--    of the key with the same body gets the stored response, another body is refused. The row,
--    its audit entry and the outbox message to the adjustment topic commit together.
CREATE TABLE adjustment_request (
    idempotency_key  text        PRIMARY KEY CHECK (idempotency_key ~ '^[!-~]{1,128}$'),
    -- SHA-256 of the RFC 8785 form of the request body as the client sent it.
    body_sha256      char(64)    NOT NULL CHECK (body_sha256 ~ '^[0-9a-f]{64}$'),
    adjustment_id    uuid        NOT NULL UNIQUE,
    operator_id      text        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('VOID', 'CORRECT')),
    ref_cdr_id       uuid        NOT NULL,
    -- cdr_id of the chain entry the adjustment becomes (domain/adjustment.adjustment_cdr_id).
    cdr_id           uuid        NOT NULL UNIQUE,
    actor            text        NOT NULL,
    ticket_ref       text        NOT NULL,
    -- The request as it travels (AdjustmentRequest.to_dict) and the response the caller got.
    request          jsonb       NOT NULL,
    response         jsonb       NOT NULL,
    audit_seq        bigint      NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- The portal's pre-check "another adjustment of this record on its way" (cdr_ref_cdr_id, for
-- the entries that reference a record, is migration 0007's).
CREATE INDEX adjustment_request_ref ON adjustment_request (ref_cdr_id);

CREATE TRIGGER adjustment_request_append_only_rows BEFORE UPDATE OR DELETE ON adjustment_request
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER adjustment_request_append_only_truncate BEFORE TRUNCATE ON adjustment_request
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();

GRANT SELECT, INSERT ON adjustment_request TO {app_role};
