-- backfilld schema, version 6: bars that are right, not just present.
--
--  * A series is (symbol, timeframe, feed, adjustment), and each is stored as
--    its own: bars carries feed and adjustment in its key. IEX and SIP prices
--    of one symbol are different data (IEX volume is a few % of SIP's), and so
--    are split-adjusted and raw ones; keyed apart they can never overwrite
--    each other, a historical `sip` and an intraday `iex` definition of one
--    symbol keep two series, and switching a definition's feed fetches the
--    new series instead of answering "covered". Every bar also says when the
--    values it holds were fetched (fetched_at) and whether they were final
--    then (final: false for a bar still in progress or inside Alpaca's
--    recalculation window, which is fetched again until it is final).
--    Text columns rather than a series id: a few bytes a row, and every
--    query and operator keeps reading bars by symbol.
--  * Days are New York trading days. A bare date means the America/New_York
--    day (backfilld_ny_day), which holds the whole extended session
--    (04:00-20:00 local) whatever the UTC offset that day; chunks of every
--    timeframe are cut at New York midnights (weeks from Monday, months and
--    years from the 1st), so a chunk never splits a session and a daily bar
--    (stamped at New York midnight) lands in the chunk of its trading day.
--  * Only settled bars count as covered. The scheduler's open end is no
--    longer "the current hour" but the settled horizon
--    (backfilld_settled_until): the end of the last bar that closed more than
--    the settling delay ago and that the plan may read (SIP without a
--    real-time plan: 15 minutes old). An open-ended definition's last run is
--    extended to the horizon every refresh_interval (1 hour when NULL), so its
--    tail keeps being fetched as it settles, without a run per hour of
--    history.

-- --- bars: one series per (symbol, timeframe, feed, adjustment) -----------------
-- Constant defaults: adding the columns rewrites nothing. Bars stored before
-- version 6 are labelled with the series of the definition that wrote them
-- (the historical one if there are two), fetched_at unknown (NULL): the rows
-- of series other than (sip, raw) are rewritten, with the key dropped
-- meanwhile, and the key is then built once.
ALTER TABLE bars
    ADD COLUMN feed text NOT NULL DEFAULT 'sip' CHECK (feed IN ('sip','iex','otc','boats')),
    -- Checked where it is chosen (job_definitions, whose runs carry it): a regular
    -- expression on every row written cost as much as a fifth of a bare COPY.
    ADD COLUMN adjustment text NOT NULL DEFAULT 'raw',
    ADD COLUMN final boolean NOT NULL DEFAULT true,
    ADD COLUMN fetched_at timestamptz;
ALTER TABLE bars DROP CONSTRAINT bars_pkey;
UPDATE bars b
   SET feed = d.feed, adjustment = d.adjustment
  FROM (SELECT DISTINCT ON (symbol, timeframe) symbol, timeframe, feed, adjustment
          FROM job_definitions
         ORDER BY symbol, timeframe, job_type <> 'fetch_historical', id) d
 WHERE d.symbol = b.symbol AND d.timeframe = b.timeframe
   AND (d.feed, d.adjustment) <> ('sip', 'raw');
ALTER TABLE bars ADD PRIMARY KEY (symbol, timeframe, feed, adjustment, ts);
-- The bars not final yet (few): where the next intraday run starts.
CREATE INDEX bars_unsettled ON bars (symbol, timeframe, feed, adjustment, ts) WHERE NOT final;

-- --- New York days ----------------------------------------------------------------
-- New York midnight of a date: where a bare date's trading day starts.
CREATE FUNCTION backfilld_ny_day(p_day date) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_day::timestamp AT TIME ZONE 'America/New_York'
$$;

-- The end of the last settled bar at p_now: bars that ended at least p_settle
-- before p_now (SIP also p_sip_delay: 15 minutes on a plan without real-time
-- SIP, 0 with one). Intraday bars are aligned to their length since the
-- epoch; day, week and month bars end at a New York midnight.
CREATE FUNCTION backfilld_settled_until(p_timeframe text, p_feed text, p_now timestamptz,
                                        p_settle interval DEFAULT '60 seconds',
                                        p_sip_delay interval DEFAULT '15 minutes')
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH t AS (SELECT p_now - p_settle - CASE WHEN p_feed = 'sip' THEN p_sip_delay ELSE interval '0' END AS t)
    SELECT CASE p_timeframe
        WHEN 'm1'  THEN date_bin('1 minute', t, timestamptz '1970-01-01 00:00+00')
        WHEN 'm5'  THEN date_bin('5 minutes', t, timestamptz '1970-01-01 00:00+00')
        WHEN 'm15' THEN date_bin('15 minutes', t, timestamptz '1970-01-01 00:00+00')
        WHEN 'm30' THEN date_bin('30 minutes', t, timestamptz '1970-01-01 00:00+00')
        WHEN 'h1'  THEN date_bin('1 hour', t, timestamptz '1970-01-01 00:00+00')
        WHEN 'h4'  THEN date_bin('4 hours', t, timestamptz '1970-01-01 00:00+00')
        WHEN 'd1'  THEN date_trunc('day', t AT TIME ZONE 'America/New_York') AT TIME ZONE 'America/New_York'
        WHEN 'w1'  THEN date_trunc('week', t AT TIME ZONE 'America/New_York') AT TIME ZONE 'America/New_York'
        WHEN 'mn1' THEN date_trunc('month', t AT TIME ZONE 'America/New_York') AT TIME ZONE 'America/New_York'
    END FROM t
$$;

-- --- chunks at New York midnights -------------------------------------------------
-- The same lengths as before, cut in New York local time: weeks from Monday
-- (1970-01-05), months and years from the 1st. Local midnight to local
-- midnight, so a chunk is 7 days of 23, 24 or 25 hours.
CREATE OR REPLACE FUNCTION backfill_chunks(p_timeframe text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (chunk_start timestamptz, chunk_end timestamptz)
LANGUAGE sql STABLE AS $$
    WITH s AS (
        SELECT backfill_chunk_interval(p_timeframe) AS step,
               (extract(year FROM backfill_chunk_interval(p_timeframe)) * 12
                + extract(month FROM backfill_chunk_interval(p_timeframe)))::int AS months,
               p_from AT TIME ZONE 'America/New_York' AS f, p_to AT TIME ZONE 'America/New_York' AS t),
    b AS (
        SELECT step, t,
               CASE WHEN months = 0 THEN date_bin(step, f, timestamp '1970-01-05')
                    ELSE timestamp '1970-01-01' + make_interval(months => (floor(
                             ((extract(year FROM f) - 1970) * 12 + extract(month FROM f) - 1)
                             / months) * months)::int) END AS first
          FROM s)
    SELECT greatest(g AT TIME ZONE 'America/New_York', p_from),
           least((g + b.step) AT TIME ZONE 'America/New_York', p_to)
      FROM b, generate_series(b.first, b.t, b.step) AS g
     WHERE (g + b.step) AT TIME ZONE 'America/New_York' > p_from
       AND g AT TIME ZONE 'America/New_York' < p_to
     ORDER BY 1
$$;

-- --- chunk ends in New York time, whatever the session's TimeZone ------------------
-- The first chunk boundary after p_ts. (Version 4 searched [p_ts, p_ts + the
-- chunk's length), the addition done in the session's TimeZone: an hour short
-- for a New York week or month that holds the fall-back.)
CREATE OR REPLACE FUNCTION backfill_chunk_end(p_timeframe text, p_ts timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT chunk_end FROM backfill_chunks(p_timeframe, p_ts, p_ts + 2 * backfill_chunk_interval(p_timeframe))
     ORDER BY chunk_start LIMIT 1
$$;

-- --- retries: the backoff's exponent is bounded ------------------------------------
-- 2^(attempt - 1) overflows a double near attempt 1,024; the cap is reached
-- long before 2^30 anyway.
CREATE OR REPLACE FUNCTION job_retry_delay(p_attempt integer, p_base_ms bigint, p_cap_ms bigint)
RETURNS interval LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => least(p_cap_ms::double precision,
               least(p_cap_ms::double precision,
                     p_base_ms * power(2::double precision, least(greatest(p_attempt - 1, 0), 30)))
               * (0.75 + 0.5 * random())) / 1000.0)
$$;

-- --- enqueue: an open end's head and tail together cover their chunk ---------------
CREATE OR REPLACE FUNCTION enqueue_ranges(p_def_ids bigint[], p_from timestamptz, p_to timestamptz,
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
       -- an open end's chunk is a settled head and a tail being fetched: covered
       -- by the two together, not by either
       AND (p_force OR NOT (m.ok + m.busy) @> tstzrange(ch.chunk_start, ch.chunk_end))
       AND (p_retry_failed OR NOT m.bad @> tstzrange(ch.chunk_start, ch.chunk_end))
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- --- completion counts the run's own series ---------------------------------------
CREATE OR REPLACE FUNCTION complete_job_runs(p_worker text, p_ids bigint[], p_attempts integer[],
                                             p_bars bigint[], p_pages integer[])
RETURNS SETOF bigint LANGUAGE sql AS $$
    WITH x AS (
        SELECT x.*, (SELECT count(*) FROM bars b
                      WHERE b.symbol = r.symbol AND b.timeframe = r.timeframe
                        AND b.feed = r.feed AND b.adjustment = r.adjustment
                        AND b.ts >= r.range_start AND b.ts < r.range_end) AS stored
          FROM unnest(p_ids, p_attempts, p_bars, p_pages) AS x(id, attempt, bars, pages)
          JOIN job_runs r ON r.id = x.id AND r.attempt = x.attempt AND r.locked_by = p_worker
                         AND r.status = 'running'),
    u AS (
        UPDATE job_runs r
           SET status = 'succeeded', bars_written = x.bars, pages = x.pages,
               finished_at = now(), locked_by = NULL, locked_until = NULL, updated_at = now()
          FROM x
         WHERE r.id = x.id AND x.stored >= x.bars
        RETURNING r.id),
    gap AS (
        UPDATE job_runs r
           SET status = CASE WHEN r.attempt < r.max_attempts THEN 'queued' ELSE 'failed' END,
               run_after = now(),
               finished_at = CASE WHEN r.attempt < r.max_attempts THEN NULL ELSE now() END,
               last_error = format('%s of the %s bars written are stored: pages were lost with a '
                                   'database crash or failover; fetched again', x.stored, x.bars),
               errors = r.errors || jsonb_build_array(jsonb_build_object(
                            'at', now(), 'attempt', r.attempt, 'worker', p_worker,
                            'error', format('%s of the %s bars written are stored: pages were lost '
                                            'with a database crash or failover; fetched again',
                                            x.stored, x.bars))),
               locked_by = NULL, locked_until = NULL, updated_at = now()
          FROM x
         WHERE r.id = x.id AND x.stored < x.bars
        RETURNING r.id)
    SELECT id FROM u
    UNION ALL
    SELECT r.id FROM job_runs r JOIN unnest(p_ids, p_attempts) AS y(id, attempt) ON y.id = r.id
     WHERE r.status = 'succeeded' AND r.attempt = y.attempt
       AND EXISTS (SELECT 1 FROM job_run_claims c
                    WHERE c.run_id = r.id AND c.attempt = y.attempt AND c.worker = p_worker)
$$;

-- --- a definition's series changed: its queued runs go ---------------------------
-- Queued runs of the old series have not fetched anything: they are deleted;
-- running ones are cancelled (what they already wrote stays in their own
-- series). The reset below has the scheduler (or the enqueue in the same
-- transaction) queue the new series' chunks.
CREATE OR REPLACE FUNCTION backfilld_def_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    series_changed boolean := (NEW.symbol, NEW.timeframe, NEW.feed, NEW.adjustment)
                              IS DISTINCT FROM (OLD.symbol, OLD.timeframe, OLD.feed, OLD.adjustment);
BEGIN
    NEW.updated_at := now();
    IF series_changed THEN
        DELETE FROM job_runs WHERE job_def_id = NEW.id AND status = 'queued';
        -- Their fence then refuses their completion: they cannot mark the new
        -- series' chunks covered, nor hold the unique index of active runs.
        UPDATE job_runs
           SET status = 'cancelled', finished_at = now(), locked_by = NULL, locked_until = NULL,
               last_error = format('the definition''s series changed to %s/%s/%s/%s while it ran',
                                   NEW.symbol, NEW.timeframe, NEW.feed, NEW.adjustment),
               updated_at = now()
         WHERE job_def_id = NEW.id AND status = 'running';
    END IF;
    IF NEW.priority IS DISTINCT FROM OLD.priority THEN
        UPDATE job_runs SET priority = NEW.priority, updated_at = now()
         WHERE job_def_id = NEW.id AND status = 'queued';
    END IF;
    IF NEW.enabled IS DISTINCT FROM OLD.enabled THEN
        UPDATE job_runs SET paused = NOT NEW.enabled, updated_at = now()
         WHERE job_def_id = NEW.id AND status = 'queued' AND paused = NEW.enabled;
    END IF;
    INSERT INTO job_coverage_log (job_def_id, kind)
    VALUES (NEW.id, CASE WHEN series_changed THEN 'reset' ELSE 'recheck' END);
    RETURN NEW;
END
$$;

-- --- the scheduler: settled open ends, per-series intraday starts -------------------
--  * fetch_historical: the chunks of [backfill_from, least(backfill_to, the
--    settled horizon)) that have no run. An open-ended definition (no
--    backfill_to, or one past the horizon) is looked at every
--    refresh_interval (1 hour if NULL): what settled since is fetched by a
--    tail run of its own, and the chunk keeps at most two runs (its head,
--    into which a finished tail is merged, and the tail, whose row is
--    reused), so nothing settled is fetched twice and there is no run per
--    refresh. A tail that failed is extended and fetched again whole.
--  * fetch_intraday: one run from the series' first bar not final yet (or its
--    last bar, or now - lookback) to now (now - p_sip_delay for SIP), every
--    refresh_interval, never two at once. It may store bars still in
--    progress, marked not final; the next run fetches them again.
-- Its arguments change, so it is dropped and made anew: the roles that could
-- run the old one (migrate --grant-role) are noted and granted the new one.
SELECT set_config('backfilld.schedule_grantees',
                  coalesce(string_agg(DISTINCT a.grantee::regrole::text, ','), ''), true)
  FROM pg_proc p, aclexplode(p.proacl) a
 WHERE p.oid = 'schedule_due_jobs(integer)'::regprocedure AND a.privilege_type = 'EXECUTE'
   AND a.grantee <> p.proowner AND a.grantee <> 0;
DROP FUNCTION schedule_due_jobs(integer);
CREATE FUNCTION schedule_due_jobs(p_max_attempts integer DEFAULT 5,
                                  p_settle interval DEFAULT '60 seconds',
                                  p_sip_delay interval DEFAULT '15 minutes')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d record;
    total integer := 0;
    k integer;
    last_ts timestamptz;
    t_end timestamptz;
    horizon timestamptz;
    missing tstzmultirange;
    m tstzrange;
    lo timestamptz;
    tail job_runs;
    head job_runs;
    ce timestamptz;
    open_end boolean;
    next_look timestamptz;
    done tstzmultirange;
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
        IF d.job_type <> 'fetch_historical' THEN
            UPDATE job_coverage SET recheck_at = NULL WHERE job_def_id = d.id;
            CONTINUE;
        END IF;
        horizon := backfilld_settled_until(d.timeframe, d.feed, now(), p_settle, p_sip_delay);
        open_end := d.backfill_to IS NULL OR d.backfill_to > horizon;
        t_end := CASE WHEN open_end THEN horizon ELSE d.backfill_to END;
        next_look := CASE WHEN open_end THEN now() + coalesce(d.refresh_interval, interval '1 hour') END;
        IF NOT d.enabled OR d.backfill_from IS NULL OR t_end <= d.backfill_from THEN
            -- nothing to do until the definition changes (that sets recheck_at)
            UPDATE job_coverage SET recheck_at = CASE WHEN d.enabled AND d.backfill_from IS NOT NULL
                                                      THEN next_look END
             WHERE job_def_id = d.id;
            CONTINUE;
        END IF;
        missing := tstzmultirange(tstzrange(d.backfill_from, t_end)) - d.known;
        done := '{}';
        FOR m IN SELECT u FROM unnest(missing) AS u ORDER BY lower(u)
        LOOP
            lo := lower(m);
            -- The open end moved: what settled since is the chunk's tail.
            IF open_end THEN
                SELECT * INTO tail FROM job_runs
                 WHERE job_def_id = d.id AND range_end = lo
                   AND range_start >= lo - backfill_chunk_interval(d.timeframe) - interval '1 day'
                   AND (symbol, timeframe, feed, adjustment) = (d.symbol, d.timeframe, d.feed, d.adjustment)
                 ORDER BY range_start DESC LIMIT 1;
                ce := CASE WHEN FOUND THEN backfill_chunk_end(d.timeframe, tail.range_start) END;
                IF FOUND AND ce > lo AND tail.status IN ('queued', 'running') THEN
                    -- Being fetched: the rest waits for the next look, not a second run.
                    CONTINUE;
                END IF;
                IF FOUND AND ce > lo AND tail.status = 'succeeded' THEN
                    -- A chunk keeps at most two runs, its settled head and the tail: a
                    -- finished tail is merged into the head and goes; a new one is
                    -- queued below for what settled since. Nothing settled is fetched
                    -- twice, and a tail's attempts count from 0.
                    SELECT * INTO head FROM job_runs
                     WHERE job_def_id = d.id AND range_end = tail.range_start AND status = 'succeeded'
                       AND range_start >= tail.range_start - backfill_chunk_interval(d.timeframe) - interval '1 day'
                       AND (symbol, timeframe, feed, adjustment) = (d.symbol, d.timeframe, d.feed, d.adjustment)
                       AND backfill_chunk_end(d.timeframe, range_start) = ce
                     ORDER BY range_start LIMIT 1;
                    IF FOUND THEN
                        UPDATE job_runs
                           SET range_end = tail.range_end, bars_written = head.bars_written + tail.bars_written,
                               pages = head.pages + tail.pages, finished_at = tail.finished_at, updated_at = now()
                         WHERE id = head.id;
                        DELETE FROM job_runs WHERE id = tail.id;
                    END IF;
                END IF;
                -- A tail that failed for good or was cancelled stays so (like any
                -- chunk: an operator's enqueue retries it); what settled after it
                -- is queued as a new tail all the same.
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
            done := done + tstzmultirange(m);
        END LOOP;
        UPDATE job_coverage
           SET known = known + done, recheck_at = next_look, updated_at = now()
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
        t_end := now() - CASE WHEN d.feed = 'sip' THEN p_sip_delay ELSE interval '0' END;
        -- (A bar not final older than lookback, one fetches no longer return since
        -- a correction emptied its minute, must not anchor every later run.)
        SELECT coalesce(
                   (SELECT min(ts) FROM bars
                     WHERE (symbol, timeframe, feed, adjustment) = (d.symbol, d.timeframe, d.feed, d.adjustment)
                       AND NOT final AND ts >= t_end - d.lookback),
                   (SELECT max(ts) FROM bars
                     WHERE (symbol, timeframe, feed, adjustment) = (d.symbol, d.timeframe, d.feed, d.adjustment)))
          INTO last_ts;
        lo := least(coalesce(last_ts, t_end - d.lookback), t_end - interval '1 second');
        INSERT INTO job_runs (job_def_id, job_type, symbol, timeframe, feed, adjustment,
                              range_start, range_end, priority, max_attempts)
        VALUES (d.id, d.job_type, d.symbol, d.timeframe, d.feed, d.adjustment,
                lo, t_end, d.priority, coalesce(d.max_attempts, p_max_attempts))
        ON CONFLICT DO NOTHING;
        total := total + 1;
    END LOOP;
    RETURN total;
END
$$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION schedule_due_jobs(integer, interval, interval) '
                   'SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION complete_job_runs(text, bigint[], integer[], bigint[], integer[]) '
                   'SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
    -- CREATE OR REPLACE reset these to no search_path: pinned again, as 004 did.
    EXECUTE format('ALTER FUNCTION backfilld_def_changed() SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION enqueue_ranges(bigint[], timestamptz, timestamptz, boolean, integer, boolean) '
                   'SET search_path = %I, pg_temp', current_schema());
END
$$;
REVOKE EXECUTE ON FUNCTION schedule_due_jobs(integer, interval, interval) FROM PUBLIC;
DO $$
BEGIN
    IF current_setting('backfilld.schedule_grantees') <> '' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION schedule_due_jobs(integer, interval, interval) TO %s',
                       current_setting('backfilld.schedule_grantees'));
    END IF;
END
$$;

-- status now also reads the coverage log (completions not folded yet): the
-- roles that may read job_coverage (migrate --create-role) may read it too.
DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT DISTINCT grantee FROM information_schema.role_table_grants
              WHERE table_schema = current_schema() AND table_name = 'job_coverage'
                AND privilege_type = 'SELECT' AND grantee NOT IN (current_user, 'PUBLIC')
    LOOP
        EXECUTE format('GRANT SELECT ON job_coverage_log TO %I', r);
    END LOOP;
END
$$;
