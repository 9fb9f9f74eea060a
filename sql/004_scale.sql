-- backfilld schema, version 4: costs that do not grow with history.
--
-- At every US stock over ten years (10,000 definitions, 5M runs) the queue
-- must cost the same as at 50 symbols. Four things changed:
--
--  * Coverage is kept, not recomputed. job_coverage holds, per definition,
--    the time ranges that have a run of any status (known: the scheduler
--    never queues those again) and those with a succeeded run (covered), as
--    multiranges: a fully covered definition is one range. Scheduling is a
--    range difference, and only definitions that changed, or whose open end
--    moved, are looked at (recheck_at). Writers never touch job_coverage:
--    triggers on job_runs append what changed to job_coverage_log, and the
--    scheduler (one at a time, under its advisory lock) folds the log in.
--    So no hot row, no lock order between hosts, and deleting a run still
--    re-queues its chunk (its range is recomputed from the runs left).
--  * Counts are kept too: every statement that changes runs' statuses
--    appends its net change to job_run_count_deltas (insert only: no
--    contention), the scheduler rolls them into job_run_counts, and
--    job_run_totals adds both up, exact in any snapshot.
--  * Runs of disabled definitions are out of the claim's index (paused), so a
--    claim never walks a disabled backlog.
--  * Finished runs can be pruned (prune_job_runs) without losing coverage.

-- --- runs of disabled definitions leave the claim's path ---------------------
ALTER TABLE job_runs ADD COLUMN paused boolean NOT NULL DEFAULT false;

-- --- coverage ------------------------------------------------------------------
CREATE TABLE job_coverage (
    job_def_id bigint PRIMARY KEY REFERENCES job_definitions (id) ON DELETE CASCADE,
    known      tstzmultirange NOT NULL DEFAULT '{}',  -- has a run, of any status
    covered    tstzmultirange NOT NULL DEFAULT '{}',  -- has a succeeded run
    recheck_at timestamptz DEFAULT now(),             -- the scheduler looks again then
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_coverage_recheck ON job_coverage (recheck_at) WHERE recheck_at IS NOT NULL;

-- kind: known (span gained a run), covered (span gained a succeeded run),
-- redo (span lost or changed runs: recompute it), reset (recompute all),
-- recheck (the definition changed: schedule it again).
CREATE TABLE job_coverage_log (
    id         bigserial PRIMARY KEY,
    job_def_id bigint NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('known', 'covered', 'redo', 'reset', 'recheck')),
    span       tstzmultirange NOT NULL DEFAULT '{}'
);

-- --- counts ------------------------------------------------------------------------
-- n runs; bars: their bars_written, kept exact for succeeded runs (whose
-- count does not change after they succeed), not for running ones.
CREATE TABLE job_run_counts (
    status text NOT NULL,
    paused boolean NOT NULL,
    n      bigint NOT NULL,
    bars   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (status, paused)
);
CREATE TABLE job_run_count_deltas (
    status text NOT NULL,
    paused boolean NOT NULL,
    n      bigint NOT NULL,
    bars   bigint NOT NULL DEFAULT 0
);
CREATE VIEW job_run_totals AS
    SELECT status, paused, sum(n)::bigint AS n, sum(bars)::bigint AS bars
      FROM (SELECT status, paused, n, bars FROM job_run_counts
            UNION ALL SELECT status, paused, n, bars FROM job_run_count_deltas) x
     GROUP BY status, paused;

-- What the triggers below keep, built from job_runs as it is: the paused
-- flags, the counts, and every definition's coverage (from the runs of its
-- series). Run by this migration, and by whoever changed job_runs with the
-- triggers off (a bulk load with session_replication_role = replica, a
-- restore), with no daemon writing meanwhile. The coverage of pruned runs
-- has no row to be rebuilt from: it is lost, and their chunks queued again.
CREATE FUNCTION backfilld_rebuild_queue_state() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE job_runs r SET paused = NOT d.enabled
      FROM job_definitions d
     WHERE d.id = r.job_def_id AND r.status = 'queued' AND r.paused = d.enabled;
    DELETE FROM job_run_count_deltas;
    DELETE FROM job_run_counts;
    INSERT INTO job_run_counts (status, paused, n, bars)
    SELECT status, paused, count(*), sum(bars_written) FROM job_runs GROUP BY 1, 2;
    DELETE FROM job_coverage_log;
    INSERT INTO job_coverage (job_def_id, known, covered, recheck_at)
    SELECT d.id, coalesce(k.known, '{}'), coalesce(k.covered, '{}'),
           CASE WHEN d.job_type = 'fetch_historical' THEN now() END
      FROM job_definitions d
      LEFT JOIN (SELECT r.job_def_id, range_agg(tstzrange(r.range_start, r.range_end)) AS known,
                        range_agg(tstzrange(r.range_start, r.range_end))
                            FILTER (WHERE r.status = 'succeeded') AS covered
                   FROM job_runs r JOIN job_definitions x ON x.id = r.job_def_id
                  WHERE (r.symbol, r.timeframe, r.feed, r.adjustment)
                        = (x.symbol, x.timeframe, x.feed, x.adjustment)
                  GROUP BY 1) k ON k.job_def_id = d.id
    ON CONFLICT (job_def_id) DO UPDATE
        SET known = EXCLUDED.known, covered = EXCLUDED.covered,
            recheck_at = EXCLUDED.recheck_at, updated_at = now();
END
$$;
REVOKE EXECUTE ON FUNCTION backfilld_rebuild_queue_state() FROM PUBLIC;
-- Before the new indexes: no index names paused yet, so setting it can be a HOT update.
SELECT backfilld_rebuild_queue_state();

DROP INDEX job_runs_claim;
CREATE INDEX job_runs_claim ON job_runs (priority DESC, run_after, range_start, id)
    WHERE status = 'queued' AND NOT paused;
-- A definition's runs by time: coverage recomputation, the tail run, status.
DROP INDEX job_runs_def;
CREATE INDEX job_runs_def ON job_runs (job_def_id, range_start, id);
-- Pruning reads finished runs oldest first; cancelled ones are finished too.
DROP INDEX job_runs_finished;
CREATE INDEX job_runs_finished ON job_runs (finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');
-- Runs waiting out a retry backoff (few): the "waiting" count without a scan.
CREATE INDEX job_runs_retry ON job_runs (run_after) WHERE status = 'queued' AND attempt > 0;
-- The oldest claimable run (progress line, status, the piling-up alert).
CREATE INDEX job_runs_queued_age ON job_runs (created_at) WHERE status = 'queued' AND NOT paused;
-- Recent errors (status) without reading every run.
CREATE INDEX job_runs_errors ON job_runs (updated_at) WHERE last_error IS NOT NULL;


-- --- triggers on job_runs ----------------------------------------------------------
-- SECURITY DEFINER: an operator's UPDATE of job_runs logs its change even
-- without rights on the log tables.

-- Pruning sets backfilld.pruning for its transaction: a pruned run keeps its coverage.
CREATE FUNCTION backfilld_pruning() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('backfilld.pruning', true), '') = 'on'
$$;

CREATE FUNCTION backfilld_runs_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO job_run_count_deltas (status, paused, n, bars)
    SELECT status, paused, count(*), sum(bars_written) FROM new_rows GROUP BY 1, 2;
    INSERT INTO job_coverage_log (job_def_id, kind, span)
    SELECT job_def_id, 'known', range_agg(tstzrange(range_start, range_end))
      FROM new_rows GROUP BY 1
    UNION ALL
    SELECT job_def_id, 'covered', range_agg(tstzrange(range_start, range_end))
      FROM new_rows WHERE status = 'succeeded' GROUP BY 1;
    RETURN NULL;
END
$$;

CREATE FUNCTION backfilld_runs_updated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    -- A lease renewal changes no status and no range: one join, nothing written.
    WITH ch AS MATERIALIZED (
        SELECT o.job_def_id AS o_def, n.job_def_id AS n_def, o.status AS o_status,
               n.status AS n_status, o.paused AS o_paused, n.paused AS n_paused,
               o.bars_written AS o_bars, n.bars_written AS n_bars,
               tstzrange(o.range_start, o.range_end) AS o_range,
               tstzrange(n.range_start, n.range_end) AS n_range,
               (o.symbol, o.timeframe, o.feed, o.adjustment)
                   IS DISTINCT FROM (n.symbol, n.timeframe, n.feed, n.adjustment) AS series
          FROM old_rows o JOIN new_rows n ON n.id = o.id
         WHERE o.status IS DISTINCT FROM n.status OR o.paused IS DISTINCT FROM n.paused
            OR (n.status = 'succeeded' AND o.bars_written IS DISTINCT FROM n.bars_written)
            OR o.range_start IS DISTINCT FROM n.range_start
            OR o.range_end IS DISTINCT FROM n.range_end
            OR o.job_def_id IS DISTINCT FROM n.job_def_id
            OR (o.symbol, o.timeframe, o.feed, o.adjustment)
               IS DISTINCT FROM (n.symbol, n.timeframe, n.feed, n.adjustment)),
    counts AS (
        INSERT INTO job_run_count_deltas (status, paused, n, bars)
        SELECT status, paused, sum(d), sum(b)
          FROM (SELECT o_status AS status, o_paused AS paused, -1 AS d, -o_bars AS b FROM ch
                UNION ALL SELECT n_status, n_paused, 1, n_bars FROM ch) x
         GROUP BY 1, 2 HAVING sum(d) <> 0 OR sum(b) <> 0)
    INSERT INTO job_coverage_log (job_def_id, kind, span)
    -- a run that succeeded covers its range
    SELECT n_def, 'covered', range_agg(n_range) FROM ch
     WHERE n_status = 'succeeded' AND o_status IS DISTINCT FROM 'succeeded'
       AND o_range = n_range AND o_def = n_def AND NOT series
     GROUP BY 1
    UNION ALL
    -- anything else that can shrink coverage: recompute the ranges it touched
    SELECT def, 'redo', range_agg(r)
      FROM (SELECT o_def AS def, o_range AS r FROM ch
             WHERE o_range <> n_range OR o_def <> n_def OR series
                OR (o_status = 'succeeded' AND n_status <> 'succeeded')
            UNION ALL
            SELECT n_def, n_range FROM ch
             WHERE o_range <> n_range OR o_def <> n_def OR series) x
     GROUP BY 1;
    RETURN NULL;
END
$$;

CREATE FUNCTION backfilld_runs_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO job_run_count_deltas (status, paused, n, bars)
    SELECT status, paused, -count(*), -sum(bars_written) FROM old_rows GROUP BY 1, 2;
    IF NOT backfilld_pruning() THEN
        INSERT INTO job_coverage_log (job_def_id, kind, span)
        SELECT job_def_id, 'redo', range_agg(tstzrange(range_start, range_end))
          FROM old_rows GROUP BY 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION backfilld_runs_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    DELETE FROM job_run_counts;
    DELETE FROM job_run_count_deltas;
    DELETE FROM job_coverage_log;
    UPDATE job_coverage SET known = '{}', covered = '{}', recheck_at = now(), updated_at = now();
    RETURN NULL;
END
$$;

CREATE TRIGGER job_runs_counted_insert AFTER INSERT ON job_runs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION backfilld_runs_inserted();
CREATE TRIGGER job_runs_counted_update AFTER UPDATE ON job_runs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION backfilld_runs_updated();
CREATE TRIGGER job_runs_counted_delete AFTER DELETE ON job_runs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION backfilld_runs_deleted();
CREATE TRIGGER job_runs_counted_truncate AFTER TRUNCATE ON job_runs
    FOR EACH STATEMENT EXECUTE FUNCTION backfilld_runs_truncated();

-- --- triggers on job_definitions -------------------------------------------------
CREATE FUNCTION backfilld_def_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO job_coverage (job_def_id, recheck_at)
    SELECT id, CASE WHEN job_type = 'fetch_historical' THEN now() END FROM new_rows
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER job_definitions_inserted AFTER INSERT ON job_definitions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION backfilld_def_inserted();

-- Re-prioritising moves the queued runs (the claim orders by their priority);
-- disabling takes them out of the claim's index; any change has the
-- scheduler look at the definition again, and a change of what is stored
-- (symbol, timeframe, feed, adjustment) recomputes its coverage from the
-- runs of the new series: a definition switched to another feed fetches its
-- history again instead of answering "covered".
CREATE OR REPLACE FUNCTION backfilld_def_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.priority IS DISTINCT FROM OLD.priority THEN
        UPDATE job_runs SET priority = NEW.priority, updated_at = now()
         WHERE job_def_id = NEW.id AND status = 'queued';
    END IF;
    IF NEW.enabled IS DISTINCT FROM OLD.enabled THEN
        UPDATE job_runs SET paused = NOT NEW.enabled, updated_at = now()
         WHERE job_def_id = NEW.id AND status = 'queued' AND paused = NEW.enabled;
    END IF;
    INSERT INTO job_coverage_log (job_def_id, kind)
    VALUES (NEW.id, CASE WHEN (NEW.symbol, NEW.timeframe, NEW.feed, NEW.adjustment)
                              IS DISTINCT FROM (OLD.symbol, OLD.timeframe, OLD.feed, OLD.adjustment)
                         THEN 'reset' ELSE 'recheck' END);
    RETURN NEW;
END
$$;

-- --- chunks ---------------------------------------------------------------------
-- As in version 1 (the same boundaries), but generated from the boundary at
-- or before p_from, not from 1970, so a short range costs a few rows; and
-- ranges before 1970 are cut too.
CREATE OR REPLACE FUNCTION backfill_chunks(p_timeframe text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (chunk_start timestamptz, chunk_end timestamptz)
LANGUAGE sql STABLE AS $$
    WITH s AS (
        SELECT backfill_chunk_interval(p_timeframe) AS step,
               (extract(year FROM backfill_chunk_interval(p_timeframe)) * 12
                + extract(month FROM backfill_chunk_interval(p_timeframe)))::int AS months,
               p_from AT TIME ZONE 'UTC' AS f, p_to AT TIME ZONE 'UTC' AS t),
    b AS (
        SELECT step, t,
               CASE WHEN months = 0 THEN date_bin(step, f, timestamp '1970-01-05')
                    ELSE timestamp '1970-01-01' + make_interval(months => (floor(
                             ((extract(year FROM f) - 1970) * 12 + extract(month FROM f) - 1)
                             / months) * months)::int) END AS first
          FROM s)
    SELECT greatest(g AT TIME ZONE 'UTC', p_from), least((g + b.step) AT TIME ZONE 'UTC', p_to)
      FROM b, generate_series(b.first, b.t, b.step) AS g
     WHERE (g + b.step) AT TIME ZONE 'UTC' > p_from AND g AT TIME ZONE 'UTC' < p_to
     ORDER BY 1
$$;

-- The end of the chunk p_ts is in: the first chunk boundary after p_ts.
CREATE FUNCTION backfill_chunk_end(p_timeframe text, p_ts timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT chunk_end FROM backfill_chunks(p_timeframe, p_ts, p_ts + backfill_chunk_interval(p_timeframe))
     ORDER BY chunk_start LIMIT 1
$$;

-- Queues the chunks of [p_from, p_to) of each definition in p_def_ids that
-- are not queued or running, not covered by a succeeded run (unless
-- p_force), and have no failed or cancelled run (unless p_retry_failed, an
-- operator's enqueue; the scheduler does its own). One statement for any
-- number of definitions: one pass over their runs in the range, then a
-- range test per chunk, not an anti-join probing every run for every chunk.
-- Returns the number of runs queued.
CREATE FUNCTION enqueue_ranges(p_def_ids bigint[], p_from timestamptz, p_to timestamptz,
                               p_force boolean DEFAULT false, p_max_attempts integer DEFAULT 5,
                               p_retry_failed boolean DEFAULT true)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    -- Coverage is read below: bring it up to date first (runs deleted since
    -- the scheduler last ran must count as not covered). If a scheduler is
    -- at it right now, it is doing just that.
    IF pg_try_advisory_xact_lock(hashtext('backfilld.schedule_due_jobs')) THEN
        PERFORM backfilld_fold_coverage();
    END IF;
    WITH d AS MATERIALIZED (
        SELECT * FROM job_definitions WHERE id = ANY (p_def_ids)),
    r AS (
        SELECT r.job_def_id,
               range_agg(tstzrange(r.range_start, r.range_end))
                   FILTER (WHERE r.status IN ('queued', 'running')) AS busy,
               range_agg(tstzrange(r.range_start, r.range_end))
                   FILTER (WHERE r.status = 'succeeded') AS ok,
               range_agg(tstzrange(r.range_start, r.range_end))
                   FILTER (WHERE r.status IN ('failed', 'cancelled')) AS bad
          FROM job_runs r JOIN d ON d.id = r.job_def_id
         WHERE r.range_start < p_to AND r.range_end > p_from
           AND (r.symbol, r.timeframe, r.feed, r.adjustment) = (d.symbol, d.timeframe, d.feed, d.adjustment)
         GROUP BY r.job_def_id),
    -- a pruned run leaves no row but keeps its coverage
    m AS (
        SELECT d.*, coalesce(r.busy, '{}') AS busy,
               coalesce(r.ok, '{}') + coalesce(c.covered, '{}') AS ok,
               CASE WHEN p_retry_failed THEN coalesce(r.bad, '{}')
                    ELSE coalesce(r.bad, '{}') + coalesce(c.known, '{}') END AS bad
          FROM d LEFT JOIN r ON r.job_def_id = d.id LEFT JOIN job_coverage c ON c.job_def_id = d.id)
    INSERT INTO job_runs (job_def_id, job_type, symbol, timeframe, feed, adjustment,
                          range_start, range_end, priority, max_attempts, paused)
    SELECT m.id, m.job_type, m.symbol, m.timeframe, m.feed, m.adjustment,
           ch.chunk_start, ch.chunk_end, m.priority, coalesce(m.max_attempts, p_max_attempts),
           NOT m.enabled
      FROM m, backfill_chunks(m.timeframe, p_from, p_to) ch
     WHERE NOT m.busy @> tstzrange(ch.chunk_start, ch.chunk_end)
       AND (p_force OR NOT m.ok @> tstzrange(ch.chunk_start, ch.chunk_end))
       AND (p_retry_failed OR NOT m.bad @> tstzrange(ch.chunk_start, ch.chunk_end))
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Same contract as version 1: enqueue_ranges for one definition.
CREATE OR REPLACE FUNCTION enqueue_range(p_def_id bigint, p_from timestamptz, p_to timestamptz,
                                         p_force boolean DEFAULT false,
                                         p_max_attempts integer DEFAULT 5,
                                         p_retry_failed boolean DEFAULT true)
RETURNS integer LANGUAGE sql AS $$
    SELECT enqueue_ranges(ARRAY[p_def_id], p_from, p_to, p_force, p_max_attempts, p_retry_failed)
$$;

-- --- the scheduler ----------------------------------------------------------------
-- Folds job_coverage_log into job_coverage. Called by the scheduler under its lock.
CREATE FUNCTION backfilld_fold_coverage() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH ev AS (DELETE FROM job_coverage_log RETURNING job_def_id, kind, span),
    a AS (
        SELECT job_def_id,
               coalesce(range_agg(span) FILTER (WHERE kind = 'known'), '{}') AS known_add,
               coalesce(range_agg(span) FILTER (WHERE kind = 'covered'), '{}') AS covered_add,
               coalesce(range_agg(span) FILTER (WHERE kind = 'redo'), '{}') AS redo,
               bool_or(kind = 'reset') AS reset,
               bool_or(kind IN ('redo', 'reset', 'recheck')) AS recheck
          FROM ev GROUP BY 1),
    x AS (
        SELECT a.*, rr.known_redo, rr.covered_redo
          FROM a
          JOIN job_definitions d ON d.id = a.job_def_id
          LEFT JOIN LATERAL (
              SELECT coalesce(range_agg(tstzrange(r.range_start, r.range_end)), '{}') AS known_redo,
                     coalesce(range_agg(tstzrange(r.range_start, r.range_end))
                                  FILTER (WHERE r.status = 'succeeded'), '{}') AS covered_redo
                FROM job_runs r
               WHERE (a.reset OR NOT isempty(a.redo))  -- else no scan at all (a one-time filter)
                 AND r.job_def_id = a.job_def_id
                 AND (r.symbol, r.timeframe, r.feed, r.adjustment)
                     = (d.symbol, d.timeframe, d.feed, d.adjustment)
                 AND (a.reset OR (r.range_start < upper(a.redo) AND r.range_end > lower(a.redo)
                                  AND a.redo && tstzrange(r.range_start, r.range_end)))) rr
            ON a.reset OR NOT isempty(a.redo))
    UPDATE job_coverage c
       SET known = CASE WHEN x.reset THEN x.known_redo
                        ELSE ((c.known + x.known_add) - x.redo) + coalesce(x.known_redo, '{}') END,
           covered = CASE WHEN x.reset THEN x.covered_redo
                          ELSE ((c.covered + x.covered_add) - x.redo) + coalesce(x.covered_redo, '{}') END,
           recheck_at = CASE WHEN x.recheck THEN least(c.recheck_at, now()) ELSE c.recheck_at END,
           updated_at = now()
      FROM x
     WHERE c.job_def_id = x.job_def_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Turns enabled definitions into runs. Only one caller at a time does the
-- work (a transaction-level advisory lock); the others return 0 at once.
--  * fetch_historical: the chunks of [backfill_from, backfill_to or the
--    current hour) that have no run (any status: a chunk that failed for
--    good, or that an operator cancelled, is not retried by the scheduler;
--    delete its run to have it done again). Only definitions due for a look
--    (recheck_at) are read. An open-ended definition's last run, once
--    finished, is extended to the current hour and queued again rather than
--    a new run added every hour; it is looked at again each hour.
--  * fetch_intraday: one run from the last stored bar (or now - lookback) to
--    now, every refresh_interval, never two at once (its latest run decides).
-- Also folds the coverage log and rolls the count deltas up.
CREATE OR REPLACE FUNCTION schedule_due_jobs(p_max_attempts integer DEFAULT 5)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d record;
    total integer := 0;
    k integer;
    last_ts timestamptz;
    t_end timestamptz;
    missing tstzmultirange;
    m tstzrange;
    lo timestamptz;
    tail job_runs;
    ce timestamptz;
    open_end boolean;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('backfilld.schedule_due_jobs')) THEN
        RETURN 0;
    END IF;
    PERFORM backfilld_fold_coverage();
    WITH dd AS (DELETE FROM job_run_count_deltas RETURNING status, paused, n AS dn, bars AS db)
    INSERT INTO job_run_counts (status, paused, n, bars)
    SELECT status, paused, sum(dn), sum(db) FROM dd GROUP BY 1, 2
    ON CONFLICT (status, paused) DO UPDATE
        SET n = job_run_counts.n + EXCLUDED.n, bars = job_run_counts.bars + EXCLUDED.bars;

    FOR d IN SELECT j.*, c.known
               FROM job_coverage c JOIN job_definitions j ON j.id = c.job_def_id
              WHERE c.recheck_at <= now()
              ORDER BY c.job_def_id
    LOOP
        open_end := d.backfill_to IS NULL OR d.backfill_to > date_trunc('hour', now());
        t_end := coalesce(d.backfill_to, date_trunc('hour', now()));
        IF d.job_type <> 'fetch_historical' THEN
            UPDATE job_coverage SET recheck_at = NULL WHERE job_def_id = d.id;
            CONTINUE;
        END IF;
        IF NOT d.enabled OR d.backfill_from IS NULL OR t_end <= d.backfill_from THEN
            -- nothing to do until the definition changes (that sets recheck_at)
            UPDATE job_coverage SET recheck_at = CASE WHEN d.enabled AND open_end AND d.backfill_from IS NOT NULL
                                                      THEN date_trunc('hour', now()) + interval '1 hour' END
             WHERE job_def_id = d.id;
            CONTINUE;
        END IF;
        missing := tstzmultirange(tstzrange(d.backfill_from, t_end)) - d.known;
        FOR m IN SELECT u FROM unnest(missing) AS u ORDER BY lower(u)
        LOOP
            lo := lower(m);
            -- The open end moved: extend the last run if it ends inside its chunk.
            IF open_end THEN
                SELECT * INTO tail FROM job_runs
                 WHERE job_def_id = d.id AND range_end = lo
                   AND (symbol, timeframe, feed, adjustment) = (d.symbol, d.timeframe, d.feed, d.adjustment)
                 ORDER BY range_start DESC LIMIT 1;
                IF FOUND AND tail.status NOT IN ('queued', 'running') THEN
                    ce := backfill_chunk_end(d.timeframe, tail.range_start);
                    IF ce > lo THEN
                        UPDATE job_runs
                           SET range_end = least(ce, upper(m)), status = 'queued', run_after = now(),
                               max_attempts = tail.attempt + coalesce(d.max_attempts, p_max_attempts),
                               finished_at = NULL, locked_by = NULL, locked_until = NULL,
                               paused = false, priority = d.priority, updated_at = now()
                         WHERE id = tail.id;
                        total := total + 1;
                        lo := least(ce, upper(m));
                    END IF;
                END IF;
            END IF;
            IF lo < upper(m) THEN
                INSERT INTO job_runs (job_def_id, job_type, symbol, timeframe, feed, adjustment,
                                      range_start, range_end, priority, max_attempts)
                SELECT d.id, d.job_type, d.symbol, d.timeframe, d.feed, d.adjustment,
                       c.chunk_start, c.chunk_end, d.priority, coalesce(d.max_attempts, p_max_attempts)
                  FROM backfill_chunks(d.timeframe, lo, upper(m)) c
                ON CONFLICT DO NOTHING;
                GET DIAGNOSTICS k = ROW_COUNT;
                total := total + k;
            END IF;
        END LOOP;
        UPDATE job_coverage
           SET known = known + missing,
               recheck_at = CASE WHEN open_end THEN date_trunc('hour', now()) + interval '1 hour' END,
               updated_at = now()
         WHERE job_def_id = d.id;
    END LOOP;

    FOR d IN SELECT j.* FROM job_definitions j
              WHERE j.enabled AND j.job_type = 'fetch_intraday'
                AND NOT EXISTS (SELECT 1 FROM (SELECT r.status, r.created_at FROM job_runs r
                                                WHERE r.job_def_id = j.id
                                                ORDER BY r.range_start DESC, r.id DESC LIMIT 1) l
                                 WHERE l.status IN ('queued', 'running')
                                    OR l.created_at > now() - j.refresh_interval)
              ORDER BY j.id
    LOOP
        SELECT max(ts) INTO last_ts FROM bars WHERE symbol = d.symbol AND timeframe = d.timeframe;
        INSERT INTO job_runs (job_def_id, job_type, symbol, timeframe, feed, adjustment,
                              range_start, range_end, priority, max_attempts)
        VALUES (d.id, d.job_type, d.symbol, d.timeframe, d.feed, d.adjustment,
                least(coalesce(last_ts, now() - d.lookback), now() - interval '1 second'), now(),
                d.priority, coalesce(d.max_attempts, p_max_attempts))
        ON CONFLICT DO NOTHING;
        total := total + 1;
    END LOOP;
    RETURN total;
END
$$;

-- --- the claim ----------------------------------------------------------------------
-- As in version 1. Runs of disabled definitions are not in the index it
-- walks (paused); the definition is still checked, per candidate, for a run
-- queued again after its definition was disabled.
CREATE OR REPLACE FUNCTION claim_queued_job(p_worker text DEFAULT 'psql:' || pg_backend_pid(),
                                            p_limit integer DEFAULT 1,
                                            p_lease_seconds double precision DEFAULT 30)
RETURNS SETOF job_runs LANGUAGE plpgsql AS $$
BEGIN
    -- EXECUTE: planned for this limit, not as a generic plan that must
    -- expect any number of rows.
    RETURN QUERY EXECUTE format($q$
    WITH c AS MATERIALIZED (
        SELECT r.id
          FROM job_runs r
         WHERE r.status = 'queued' AND NOT r.paused AND r.run_after <= now()
           AND (SELECT d.enabled FROM job_definitions d WHERE d.id = r.job_def_id)
         ORDER BY r.priority DESC, r.run_after, r.range_start, r.id
         LIMIT %s
           FOR UPDATE OF r SKIP LOCKED),
    u AS (
        UPDATE job_runs r
           SET status = 'running', attempt = r.attempt + 1, locked_by = $1,
               locked_until = now() + make_interval(secs => $2),
               started_at = now(), finished_at = NULL, updated_at = now()
          FROM c
         WHERE r.id = c.id
        RETURNING r.*),
    h AS (
        INSERT INTO job_run_claims (run_id, attempt, worker)
        SELECT id, attempt, $1 FROM u)
    SELECT * FROM u$q$, greatest(0, coalesce(p_limit, 1)))
    USING p_worker, p_lease_seconds;
END
$$;

-- The claim has one good plan, the ordered walk of job_runs_claim that stops
-- after p_limit rows; right after a bulk enqueue (before autovacuum has
-- analysed job_runs) the planner may think the table small and sort all of
-- it instead. So the other ways are off for this function.
ALTER FUNCTION claim_queued_job(text, integer, double precision)
    SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off;

-- A run queued again (a retry, a rescue, a release) for a definition that was
-- disabled meanwhile stays out of the claim's index.
CREATE FUNCTION backfilld_run_requeued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.paused := NOT coalesce((SELECT enabled FROM job_definitions WHERE id = NEW.job_def_id), false);
    RETURN NEW;
END
$$;
CREATE TRIGGER job_runs_requeued BEFORE UPDATE OF status ON job_runs
    FOR EACH ROW WHEN (NEW.status = 'queued' AND OLD.status <> 'queued')
    EXECUTE FUNCTION backfilld_run_requeued();

-- --- the universe -----------------------------------------------------------------
-- What `enqueue --all-active` saw in Alpaca's active asset list: when each
-- symbol was first and last listed, and since when it no longer is (NULL
-- while it is). So a symbol that leaves the list is reported as such, apart
-- from one that was only ever added by hand.
CREATE TABLE universe_assets (
    symbol     text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    gone_since timestamptz
);

-- --- pruning ------------------------------------------------------------------------
-- Deletes up to p_limit runs finished more than p_keep ago (with their claims)
-- and claims older than p_keep of runs that are not running. Coverage is
-- kept: a pruned chunk stays covered (or, failed, stays not retried).
-- Returns the number of runs deleted; call it until it returns less than p_limit.
CREATE FUNCTION prune_job_runs(p_keep interval, p_limit integer DEFAULT 1000)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM set_config('backfilld.pruning', 'on', true);
    DELETE FROM job_runs
     WHERE id IN (SELECT id FROM job_runs
                   WHERE status IN ('succeeded', 'failed', 'cancelled')
                     AND finished_at < now() - p_keep
                   ORDER BY finished_at LIMIT p_limit
                     FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM job_run_claims
     WHERE id IN (SELECT c.id FROM job_run_claims c
                   WHERE c.claimed_at < now() - p_keep
                     AND NOT EXISTS (SELECT 1 FROM job_runs r
                                      WHERE r.id = c.run_id AND r.status = 'running'
                                        AND r.attempt = c.attempt)
                   ORDER BY c.id LIMIT p_limit);  -- ids grow with claimed_at: the oldest first, on the key
    PERFORM set_config('backfilld.pruning', '', true);
    RETURN n;
END
$$;

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'claim_queued_job(text, integer, double precision)',
        'schedule_due_jobs(integer)',
        'prune_job_runs(interval, integer)']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %I, pg_temp',
                       f, current_schema());
    END LOOP;
    FOREACH f IN ARRAY ARRAY[
        'backfilld_runs_inserted()', 'backfilld_runs_updated()', 'backfilld_runs_deleted()',
        'backfilld_runs_truncated()', 'backfilld_def_inserted()', 'backfilld_def_changed()',
        'backfilld_run_requeued()', 'backfilld_fold_coverage()', 'backfilld_rebuild_queue_state()',
        'enqueue_range(bigint, timestamptz, timestamptz, boolean, integer, boolean)',
        'enqueue_ranges(bigint[], timestamptz, timestamptz, boolean, integer, boolean)']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION prune_job_runs(interval, integer) FROM PUBLIC;
