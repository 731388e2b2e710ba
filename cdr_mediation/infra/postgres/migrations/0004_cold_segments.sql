-- The cold tier (docs/archive.md): chain entries older than the hot window leave `cdr` for S3, a
-- contiguous chain_seq range at a time (a "segment", domain/cold_segment.py), and only after the
-- segment file and its manifest are archived under COMPLIANCE object lock and read back.
--
-- `cdr_cold_segment` records every archived segment with its manifest (the exact bytes archived)
-- and the S3 evidence. It is append-only, and an operator's segments form one unbroken chain:
-- each starts right after the previous one and continues from its head hash.
--
-- How archived rows leave `cdr` while it stays append-only for everyone else: the app role still
-- has no DELETE privilege on `cdr`, and the row trigger still refuses every UPDATE and DELETE,
-- with one exception: a DELETE executed by `release_cold_segment`. That function is SECURITY
-- DEFINER (it runs as {owner_role}, which owns `cdr`) and, before deleting, marks the transaction
-- with the segment it releases (a transaction-local setting, `cdr.cold_release`). The trigger lets
-- a DELETE through only if it runs as {owner_role} *and* that mark names the row's operator and a
-- range containing its chain_seq. The app role can set the mark itself, but cannot act as
-- {owner_role}, so a plain DELETE stays refused (by privilege, and by the trigger should DELETE
-- ever be granted). The function deletes nothing unless the segment is recorded here — which
-- the cold job does only after S3 verified it — and unless the rows it removes are exactly the
-- recorded ones: their count, first and last chain_seq, the prev_hash of the first, the
-- record_hash of the last (the manifest's head hash) and every link in between. Otherwise it
-- raises and the whole transaction, including the segment's record, rolls back: either all of a
-- segment's rows go together with its record, or nothing changes.
--
-- Why not a partition to detach, or a role allowed to DELETE? `cdr` is not partitioned (and
-- partitions by chain_seq or done_at per operator would not match segments); a role with DELETE
-- would be a standing hole in the append-only guarantee, while this exception exists only inside
-- one audited function, for rows that are provably in the archive.

CREATE TABLE cdr_cold_segment (
    operator_id          text        NOT NULL,
    first_seq            bigint      NOT NULL CHECK (first_seq >= 1),
    last_seq             bigint      NOT NULL CHECK (last_seq >= first_seq),
    record_count         bigint      NOT NULL CHECK (record_count = last_seq - first_seq + 1),
    prev_hash            char(64)    NOT NULL,
    head_hash            char(64)    NOT NULL,
    done_at_min          timestamptz NOT NULL,
    done_at_max          timestamptz NOT NULL CHECK (done_at_max >= done_at_min),
    -- The manifest exactly as archived (RFC 8785 JSON), and where both objects are.
    manifest             text        NOT NULL,
    manifest_key         text        NOT NULL UNIQUE,
    manifest_sha256      char(64)    NOT NULL,
    manifest_version_id  text,
    segment_key          text        NOT NULL UNIQUE,
    segment_sha256       char(64)    NOT NULL,
    segment_size         bigint      NOT NULL CHECK (segment_size >= 0),
    segment_version_id   text,
    retention_mode       text        NOT NULL CHECK (retention_mode = 'COMPLIANCE'),
    retain_until         timestamptz NOT NULL,
    archived_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator_id, first_seq),
    UNIQUE (operator_id, last_seq)
);

CREATE FUNCTION reject_cold_segment_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'P0001', HINT = 'an archived segment is evidence; it is never changed';
END
$$;

-- Segment n of an operator starts right after segment n-1 and continues its chain.
CREATE FUNCTION check_cold_segment_order() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    previous cdr_cold_segment%ROWTYPE;
BEGIN
    SELECT * INTO previous FROM cdr_cold_segment
        WHERE operator_id = NEW.operator_id ORDER BY last_seq DESC LIMIT 1;
    IF NOT FOUND THEN
        IF NEW.first_seq <> 1 OR NEW.prev_hash <> repeat('0', 64) THEN
            RAISE EXCEPTION 'cold segment % %..%: the first segment must start at chain_seq 1 from the zero hash',
                NEW.operator_id, NEW.first_seq, NEW.last_seq USING ERRCODE = 'P0001';
        END IF;
    ELSIF NEW.first_seq <> previous.last_seq + 1 OR NEW.prev_hash <> previous.head_hash THEN
        RAISE EXCEPTION 'cold segment % %..% does not continue segment %..% (head %)',
            NEW.operator_id, NEW.first_seq, NEW.last_seq, previous.first_seq, previous.last_seq, previous.head_hash
            USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER cdr_cold_segment_order BEFORE INSERT ON cdr_cold_segment
    FOR EACH ROW EXECUTE FUNCTION check_cold_segment_order();
CREATE TRIGGER cdr_cold_segment_append_only_rows BEFORE UPDATE OR DELETE ON cdr_cold_segment
    FOR EACH ROW EXECUTE FUNCTION reject_cold_segment_mutation();
CREATE TRIGGER cdr_cold_segment_append_only_truncate BEFORE TRUNCATE ON cdr_cold_segment
    FOR EACH STATEMENT EXECUTE FUNCTION reject_cold_segment_mutation();

-- The row trigger of `cdr`, now with the one exception described above.
CREATE FUNCTION guard_cdr_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    releasing text := coalesce(current_setting('cdr.cold_release', true), '');
BEGIN
    -- Nested, not one AND: SQL does not promise to evaluate the cheap tests before the casts.
    IF TG_OP = 'DELETE' AND releasing <> '' AND current_user = '{owner_role}' THEN
        IF split_part(releasing, ':', 1) = OLD.operator_id
           AND OLD.chain_seq BETWEEN split_part(releasing, ':', 2)::bigint
                                 AND split_part(releasing, ':', 3)::bigint THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'P0001', HINT = 'corrections are new chain entries (VOID/CORRECT)';
END
$$;

DROP TRIGGER cdr_append_only_rows ON cdr;
CREATE TRIGGER cdr_append_only_rows BEFORE UPDATE OR DELETE ON cdr
    FOR EACH ROW EXECUTE FUNCTION guard_cdr_mutation();

-- Remove an archived segment's rows from `cdr`; returns how many. Raises (and so rolls back the
-- caller's transaction) unless the segment is recorded and the rows are exactly its rows.
CREATE FUNCTION release_cold_segment(p_operator_id text, p_first_seq bigint, p_last_seq bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    segment cdr_cold_segment%ROWTYPE;
    removed bigint;
    lowest bigint;
    highest bigint;
    first_prev text;
    last_hash text;
    unlinked bigint;
BEGIN
    SELECT * INTO segment FROM cdr_cold_segment
        WHERE operator_id = p_operator_id AND first_seq = p_first_seq AND last_seq = p_last_seq;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no archived cold segment % %..%: nothing released', p_operator_id, p_first_seq, p_last_seq
            USING ERRCODE = 'P0001';
    END IF;
    PERFORM set_config('cdr.cold_release', p_operator_id || ':' || p_first_seq || ':' || p_last_seq, true);
    WITH gone AS (
        DELETE FROM cdr WHERE operator_id = p_operator_id AND chain_seq BETWEEN p_first_seq AND p_last_seq
        RETURNING chain_seq, prev_hash, record_hash
    ), linked AS (
        SELECT chain_seq, prev_hash, record_hash, lag(record_hash) OVER (ORDER BY chain_seq) AS before FROM gone
    )
    SELECT count(*), min(chain_seq), max(chain_seq),
           max(prev_hash) FILTER (WHERE chain_seq = p_first_seq),
           max(record_hash) FILTER (WHERE chain_seq = p_last_seq),
           count(*) FILTER (WHERE before IS NOT NULL AND prev_hash <> before)
      INTO removed, lowest, highest, first_prev, last_hash, unlinked
      FROM linked;
    PERFORM set_config('cdr.cold_release', '', true);
    IF removed <> segment.record_count OR lowest IS DISTINCT FROM p_first_seq OR highest IS DISTINCT FROM p_last_seq
       OR first_prev IS DISTINCT FROM segment.prev_hash::text OR last_hash IS DISTINCT FROM segment.head_hash::text
       OR unlinked <> 0 THEN
        RAISE EXCEPTION 'cold segment % %..%: the rows in cdr are not the archived ones (% rows of %, prev_hash %, head %, % broken links): nothing released',
            p_operator_id, p_first_seq, p_last_seq, removed, segment.record_count,
            coalesce(first_prev, 'none'), coalesce(last_hash, 'none'), unlinked
            USING ERRCODE = 'P0001';
    END IF;
    RETURN removed;
END
$$;

REVOKE ALL ON FUNCTION release_cold_segment(text, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION release_cold_segment(text, bigint, bigint) TO {app_role};
GRANT SELECT, INSERT ON cdr_cold_segment TO {app_role};

-- `cdrmed archive restore --into-table cdr_restored`: a verified copy of archived entries for
-- queries, beside `cdr` (never back into it: the hot chain continues after them). Same columns
-- and keys as `cdr`; a scratch area, so the app role may clear it. Restoring again is a no-op.
CREATE TABLE cdr_restored (LIKE cdr INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE cdr_restored ADD PRIMARY KEY (operator_id, chain_seq);
ALTER TABLE cdr_restored ADD COLUMN restored_at timestamptz NOT NULL DEFAULT now();
GRANT SELECT, INSERT, DELETE ON cdr_restored TO {app_role};
