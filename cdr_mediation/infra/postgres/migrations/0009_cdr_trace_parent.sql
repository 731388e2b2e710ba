-- Trace context beside each stored CDR (issue 8; observability/tracing.py, docs/tracing.md).
--
-- The W3C `traceparent` of the ingest span that chained the entry, so the portal can link a CDR
-- to its trace (DLR → bridge → ingest → store). Like `stored_at`, it is telemetry, not part of
-- the hashed entry: nothing reads it to verify, encode or sign, and a replay that delivers the
-- same entries under new spans leaves the first delivery's value (the store inserts new rows
-- only). NULL for rows stored before this migration, restored from the cold tier, or stored by
-- tools that run no span.
--
-- Adding a nullable column without a default only changes the catalogue: no table rewrite and
-- no long lock on a large `cdr`.
ALTER TABLE cdr ADD COLUMN trace_parent text
    CHECK (trace_parent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
