-- What of each export is in the object-lock archive (issue 6): one row per archived object,
-- written only after the object was read back and its SHA-256 and COMPLIANCE retention checked
-- (infra/archive). Append-only like the lifecycle it belongs to: an object under retention cannot
-- be removed, so neither can its row. The files of one generation of an export (the ZIP bytes
-- that were delivered) share a key prefix with the ZIP's SHA-256 in it, so a corrected file
-- issued after a rejection is archived beside the rejected one, never over it.

CREATE TABLE export_archive (
    operator_id   text        NOT NULL,
    day           date        NOT NULL,
    zip_sha256    char(64)    NOT NULL,
    -- zip | signature | checkpoint | checkpoint_signature | answer
    kind          text        NOT NULL CHECK (kind IN ('zip', 'signature', 'checkpoint', 'checkpoint_signature',
                                                       'answer')),
    object_key    text        NOT NULL PRIMARY KEY,
    sha256        char(64)    NOT NULL,
    size          bigint      NOT NULL CHECK (size >= 0),
    version_id    text,
    retain_until  timestamptz NOT NULL,
    archived_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (operator_id, day) REFERENCES export_file (operator_id, day)
);

CREATE INDEX export_archive_by_export ON export_archive (operator_id, day, zip_sha256);

CREATE TRIGGER export_archive_append_only_rows BEFORE UPDATE OR DELETE ON export_archive
    FOR EACH ROW EXECUTE FUNCTION reject_export_mutation();
CREATE TRIGGER export_archive_append_only_truncate BEFORE TRUNCATE ON export_archive
    FOR EACH STATEMENT EXECUTE FUNCTION reject_export_mutation();

GRANT SELECT, INSERT ON export_archive TO {app_role};
