-- Adjustment requests the chain refused (issue 7 follow-up; docs/adjustments.md).
--
-- The portal accepts a request against what PostgreSQL shows; the ingest agent decides against
-- the chain, and may still refuse it (two portal replicas racing on one record: the second is a
-- `stale_version`). The refusal travels on the CDR topic (`adjustment-refused.v1`) to the store
-- agent, which keeps it here, so that `GET /v1/adjustments/{id}` says "refused" and why, and so
-- that the request no longer counts as pending (which would otherwise block every later
-- adjustment of the record). One row per request, append-only like the chain it comes from.
CREATE TABLE adjustment_refusal (
    adjustment_id uuid        PRIMARY KEY,
    operator_id   text        NOT NULL,
    ref_cdr_id    uuid        NOT NULL,
    code          text        NOT NULL,
    detail        text        NOT NULL,
    refused_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TRIGGER adjustment_refusal_append_only_rows BEFORE UPDATE OR DELETE ON adjustment_refusal
    FOR EACH ROW EXECUTE FUNCTION reject_mutation();
CREATE TRIGGER adjustment_refusal_append_only_truncate BEFORE TRUNCATE ON adjustment_refusal
    FOR EACH STATEMENT EXECUTE FUNCTION reject_mutation();

GRANT SELECT, INSERT ON adjustment_refusal TO {app_role};
