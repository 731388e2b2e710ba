-- Export files and their lifecycle (issue 6, DESIGN.md §6, domain/export_lifecycle.py).
-- Both tables are append-only. An export is created in PENDING when its operator's day closes;
-- every later state is a row of export_transition, numbered 1, 2, … per export, each from the
-- state the previous one reached: the current state is the last row, and the rows are the audit
-- trail of the file (who or what moved it, when, with which evidence). The domain's transition
-- table decides what is legal; the trigger below keeps the stored history a single unbroken
-- path even if two exporters race.

CREATE FUNCTION reject_export_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'P0001', HINT = 'a new state is a new export_transition row';
END
$$;

CREATE TABLE export_file (
    operator_id   text    NOT NULL,
    day           date    NOT NULL,
    -- The day's place in the operator's closing order: the TD.57 file sequence number.
    day_sequence  integer NOT NULL CHECK (day_sequence BETWEEN 1 AND 99999),
    file_name     text    NOT NULL,
    -- The day-closed record that created it (domain/day_close.py), as received.
    day_closed    jsonb   NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator_id, day),
    UNIQUE (operator_id, day_sequence),
    UNIQUE (file_name)
);

CREATE TABLE export_transition (
    operator_id  text    NOT NULL,
    day          date    NOT NULL,
    step         integer NOT NULL CHECK (step >= 1),
    from_state   text    NOT NULL,
    event        text    NOT NULL,
    to_state     text    NOT NULL,
    -- Evidence of the step: build results (ZIP hash, checkpoint), delivery receipt, RAP reasons.
    detail       jsonb   NOT NULL DEFAULT '{}'::jsonb,
    actor        text    NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator_id, day, step),
    FOREIGN KEY (operator_id, day) REFERENCES export_file (operator_id, day),
    CHECK (from_state IN ('PENDING', 'BUILT', 'SIGNED', 'DELIVERED', 'ACKED', 'REJECTED', 'REBUILT',
                          'TIMED_OUT', 'MANUAL')),
    CHECK (to_state IN ('PENDING', 'BUILT', 'SIGNED', 'DELIVERED', 'ACKED', 'REJECTED', 'REBUILT',
                        'TIMED_OUT', 'MANUAL'))
);

-- Step n starts where step n-1 ended (step 1 where every export starts: PENDING).
CREATE FUNCTION check_export_path() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    previous text;
BEGIN
    IF NEW.step = 1 THEN
        previous := 'PENDING';
    ELSE
        SELECT to_state INTO previous FROM export_transition
            WHERE operator_id = NEW.operator_id AND day = NEW.day AND step = NEW.step - 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'export % %: step % without step %', NEW.operator_id, NEW.day, NEW.step, NEW.step - 1
                USING ERRCODE = 'P0001';
        END IF;
    END IF;
    IF NEW.from_state <> previous THEN
        RAISE EXCEPTION 'export % %: step % starts in % but the export is in %',
            NEW.operator_id, NEW.day, NEW.step, NEW.from_state, previous USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER export_transition_path BEFORE INSERT ON export_transition
    FOR EACH ROW EXECUTE FUNCTION check_export_path();

CREATE TRIGGER export_file_append_only_rows BEFORE UPDATE OR DELETE ON export_file
    FOR EACH ROW EXECUTE FUNCTION reject_export_mutation();
CREATE TRIGGER export_file_append_only_truncate BEFORE TRUNCATE ON export_file
    FOR EACH STATEMENT EXECUTE FUNCTION reject_export_mutation();
CREATE TRIGGER export_transition_append_only_rows BEFORE UPDATE OR DELETE ON export_transition
    FOR EACH ROW EXECUTE FUNCTION reject_export_mutation();
CREATE TRIGGER export_transition_append_only_truncate BEFORE TRUNCATE ON export_transition
    FOR EACH STATEMENT EXECUTE FUNCTION reject_export_mutation();

GRANT SELECT, INSERT ON export_file, export_transition TO {app_role};
