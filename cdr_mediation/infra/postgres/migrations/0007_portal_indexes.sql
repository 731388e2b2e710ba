-- Indexes for the portal's CDR search (issue 7; docs/portal.md, infra/postgres/cdr_search.py).
--
-- cdr_msisdn: "every entry of this number" (a complaint, a regulator's request) must not scan a
-- table of tens of millions of rows. The columns after msisdn are the answer's order (the
-- primary key), so a page is one index range scan from the cursor, with no sort. Cost: one more
-- B-tree entry (~50 bytes) per appended row; the table is append-only, so the index never
-- bloats from updates and needs no other maintenance than the table's own vacuum.
--
-- cdr_ref_cdr_id: the adjustments (VOID / CORRECT) of one CDR, for its detail page. Partial:
-- only adjustments have a ref_cdr_id, so the index is as small as the number of adjustments.
--
-- Migrations run in a transaction, where CREATE INDEX CONCURRENTLY is not possible, and a plain
-- CREATE INDEX blocks appends to cdr while it builds. On a deployment that already holds many
-- rows, build both indexes first by hand, without blocking the store agent:
--
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS cdr_msisdn ON cdr (msisdn, operator_id, chain_seq);
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS cdr_ref_cdr_id ON cdr (ref_cdr_id) WHERE ref_cdr_id IS NOT NULL;
--
-- (as the schema owner; check that neither is left INVALID), then this migration finds them and
-- only records itself.

CREATE INDEX IF NOT EXISTS cdr_msisdn ON cdr (msisdn, operator_id, chain_seq);
CREATE INDEX IF NOT EXISTS cdr_ref_cdr_id ON cdr (ref_cdr_id) WHERE ref_cdr_id IS NOT NULL;
