-- backfilld schema, version 1: the queue, the data and the functions the
-- daemon and operators call. Names here are a contract (see DESIGN.md and the
-- README): operators' SQL depends on them.

CREATE TABLE job_definitions (
    id               bigserial PRIMARY KEY,
    symbol           text NOT NULL CHECK (symbol <> '' AND symbol !~ '[,[:space:]]'),
    timeframe        text NOT NULL CHECK (timeframe IN ('m1','m5','m15','m30','h1','h4','d1','w1','mn1')),
    job_type         text NOT NULL CHECK (job_type IN ('fetch_historical','fetch_intraday')),
    enabled          boolean NOT NULL DEFAULT true,
    priority         integer NOT NULL DEFAULT 0,
    feed             text NOT NULL DEFAULT 'sip' CHECK (feed IN ('sip','iex','otc','boats')),
    adjustment       text NOT NULL DEFAULT 'raw'
                     CHECK (adjustment ~ '^(raw|split|dividend|spin-off|all)(,(raw|split|dividend|spin-off|all))*$'),
    backfill_from    timestamptz,
    backfill_to      timestamptz,
    refresh_interval interval,
    lookback         interval NOT NULL DEFAULT '1 day',
    max_attempts     integer CHECK (max_attempts IS NULL OR max_attempts BETWEEN 1 AND 100),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (symbol, timeframe, job_type),
    CHECK (backfill_to IS NULL OR backfill_from IS NULL OR backfill_to > backfill_from),
    CHECK (job_type <> 'fetch_intraday' OR refresh_interval IS NOT NULL)
);

CREATE TABLE job_runs (
    id           bigserial PRIMARY KEY,
    job_def_id   bigint NOT NULL REFERENCES job_definitions (id) ON DELETE CASCADE,
    job_type     text NOT NULL,
    symbol       text NOT NULL,
    timeframe    text NOT NULL,
    feed         text NOT NULL DEFAULT 'sip',
    adjustment   text NOT NULL DEFAULT 'raw',
    range_start  timestamptz NOT NULL,           -- inclusive
    range_end    timestamptz NOT NULL,           -- exclusive
    status       text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued','running','succeeded','failed','cancelled')),
    priority     integer NOT NULL DEFAULT 0,
    attempt      integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_after    timestamptz NOT NULL DEFAULT now(),
    locked_by    text,
    locked_until timestamptz,
    bars_written bigint NOT NULL DEFAULT 0,
    pages        integer NOT NULL DEFAULT 0,
    last_error   text,
    errors       jsonb NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (range_end > range_start)
);

-- One queued-or-running run per definition and range: enqueueing twice, or
-- two schedulers racing, can't duplicate work.
CREATE UNIQUE INDEX job_runs_one_active
    ON job_runs (job_def_id, range_start, range_end) WHERE status IN ('queued','running');
-- The claim's predicate and order exactly, so a claim reads only claimable rows.
-- range_start before id: runs queued together come out range by range, so a
-- claim batch holds many symbols of one range, which one request can serve.
CREATE INDEX job_runs_claim ON job_runs (priority DESC, run_after, range_start, id)
    WHERE status = 'queued';
-- Rescue looks only at running runs by lease expiry.
CREATE INDEX job_runs_lease ON job_runs (locked_until) WHERE status = 'running';
CREATE INDEX job_runs_def ON job_runs (job_def_id, status);
-- Recent completions (progress line, status, ETA) without scanning history.
CREATE INDEX job_runs_finished ON job_runs (finished_at) WHERE status IN ('succeeded', 'failed');
-- Finished runs are kept for history; let autovacuum keep up with queue churn.
ALTER TABLE job_runs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- Every claim, as history: which worker held which attempt of which run and
-- when. It is how "never one run to two workers" is checked from the database
-- (one row per run and attempt, unless a release handed the attempt back), and
-- what ops read to see where a run went. Prune old rows freely.
CREATE TABLE job_run_claims (
    id         bigserial PRIMARY KEY,
    run_id     bigint NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    attempt    integer NOT NULL,
    worker     text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_run_claims_run ON job_run_claims (run_id, attempt);

CREATE TABLE bars (
    symbol      text NOT NULL,
    timeframe   text NOT NULL,
    ts          timestamptz NOT NULL,   -- bar start, UTC
    open        double precision NOT NULL,
    high        double precision NOT NULL,
    low         double precision NOT NULL,
    close       double precision NOT NULL,
    volume      bigint NOT NULL,
    trade_count bigint NOT NULL,
    vwap        double precision NOT NULL,
    PRIMARY KEY (symbol, timeframe, ts)
);

-- Chunk length per timeframe: at most about 10,000 bars per chunk, and small
-- enough that redoing one chunk (a month of h1, say) stays cheap.
CREATE FUNCTION backfill_chunk_interval(p_timeframe text) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_timeframe
        WHEN 'm1'  THEN interval '7 days'
        WHEN 'm5'  THEN interval '1 month'
        WHEN 'm15' THEN interval '1 month'
        WHEN 'm30' THEN interval '1 month'
        WHEN 'h1'  THEN interval '1 month'
        WHEN 'h4'  THEN interval '3 months'
        WHEN 'd1'  THEN interval '1 year'
        WHEN 'w1'  THEN interval '10 years'
        WHEN 'mn1' THEN interval '50 years'
    END
$$;

-- Cuts [p_from, p_to) into chunks aligned to fixed UTC boundaries (weeks start
-- on Monday 1970-01-05, months and years on 1970-01-01), so the same range is
-- always cut the same way whatever the session's TimeZone.
CREATE FUNCTION backfill_chunks(p_timeframe text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (chunk_start timestamptz, chunk_end timestamptz)
LANGUAGE sql STABLE AS $$
    WITH s AS (
        SELECT backfill_chunk_interval(p_timeframe) AS step,
               CASE WHEN extract(month FROM backfill_chunk_interval(p_timeframe)) = 0
                     AND extract(year FROM backfill_chunk_interval(p_timeframe)) = 0
                    THEN timestamp '1970-01-05' ELSE timestamp '1970-01-01' END AS anchor)
    SELECT greatest(g AT TIME ZONE 'UTC', p_from), least((g + s.step) AT TIME ZONE 'UTC', p_to)
      FROM s, generate_series(s.anchor, p_to AT TIME ZONE 'UTC', s.step) AS g
     WHERE (g + s.step) AT TIME ZONE 'UTC' > p_from AND g AT TIME ZONE 'UTC' < p_to
     ORDER BY 1
$$;

-- Queues runs for the chunks of [p_from, p_to) of one definition that are not
-- already covered by a succeeded run (unless p_force) and not already queued
-- or running. A chunk whose run failed for good, or that an operator
-- cancelled, is queued again only when p_retry_failed (an operator's
-- enqueue); the scheduler passes false, so a chunk that cannot succeed is not
-- retried for ever and a cancel sticks. To have the scheduler redo a chunk,
-- delete its run. Returns the number of runs queued.
CREATE FUNCTION enqueue_range(p_def_id bigint, p_from timestamptz, p_to timestamptz,
                              p_force boolean DEFAULT false, p_max_attempts integer DEFAULT 5,
                              p_retry_failed boolean DEFAULT true)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO job_runs (job_def_id, job_type, symbol, timeframe, feed, adjustment,
                          range_start, range_end, priority, max_attempts)
    SELECT d.id, d.job_type, d.symbol, d.timeframe, d.feed, d.adjustment,
           c.chunk_start, c.chunk_end, d.priority, coalesce(d.max_attempts, p_max_attempts)
      FROM job_definitions d, backfill_chunks(d.timeframe, p_from, p_to) c
     WHERE d.id = p_def_id
       AND NOT EXISTS (
             SELECT 1 FROM job_runs r
              WHERE r.job_def_id = d.id
                AND r.range_start <= c.chunk_start AND r.range_end >= c.chunk_end
                -- queued/running are checked here too, not only by the unique
                -- index: a run that commits as succeeded while this statement
                -- runs is still running in its snapshot, and the index no
                -- longer covers it once it has succeeded.
                AND (r.status IN ('queued', 'running')
                     OR (r.status = 'succeeded' AND NOT p_force)
                     OR (r.status IN ('failed', 'cancelled') AND NOT p_retry_failed)))
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Claims up to p_limit queued runs for p_worker: highest priority first, then
-- oldest run_after, then range (so runs of one range come together); never a run whose definition is disabled; never one run
-- to two callers (SKIP LOCKED inside a materialised CTE, so the LIMIT can't be
-- re-evaluated into claiming more rows). Sets the lease and spends an attempt.
-- SELECT * FROM claim_queued_job(); claims one, for trying by hand.
CREATE FUNCTION claim_queued_job(p_worker text DEFAULT 'psql:' || pg_backend_pid(),
                                 p_limit integer DEFAULT 1,
                                 p_lease_seconds double precision DEFAULT 30)
RETURNS SETOF job_runs LANGUAGE sql AS $$
    WITH c AS MATERIALIZED (
        SELECT r.id
          FROM job_runs r
          JOIN job_definitions d ON d.id = r.job_def_id
         WHERE r.status = 'queued' AND r.run_after <= now() AND d.enabled
         ORDER BY r.priority DESC, r.run_after, r.range_start, r.id
         LIMIT p_limit
           FOR UPDATE OF r SKIP LOCKED),
    u AS (
        UPDATE job_runs r
           SET status = 'running', attempt = r.attempt + 1, locked_by = p_worker,
               locked_until = now() + make_interval(secs => p_lease_seconds),
               started_at = now(), finished_at = NULL, updated_at = now()
          FROM c
         WHERE r.id = c.id
        RETURNING r.*),
    h AS (
        INSERT INTO job_run_claims (run_id, attempt, worker)
        SELECT id, attempt, p_worker FROM u)
    SELECT * FROM u
$$;

-- Every later transition is fenced by (id, attempt, locked_by): a worker whose
-- lease expired and whose run was claimed again elsewhere can change nothing.

-- Marks runs succeeded. Returns the ids it completed; ids missing from the
-- result had lost their lease (rescued, re-claimed or cancelled). Idempotent
-- for the worker whose claim it was: a write resent after a lost reply (its
-- first COMMIT did land) gets the same ids back, judged by job_run_claims,
-- so the daemon reports a success rather than a lost lease.
CREATE FUNCTION complete_job_runs(p_worker text, p_ids bigint[], p_attempts integer[],
                                  p_bars bigint[], p_pages integer[])
RETURNS SETOF bigint LANGUAGE sql AS $$
    WITH x AS (
        SELECT * FROM unnest(p_ids, p_attempts, p_bars, p_pages) AS x(id, attempt, bars, pages)),
    u AS (
        UPDATE job_runs r
           SET status = 'succeeded', bars_written = x.bars, pages = x.pages,
               finished_at = now(), locked_by = NULL, locked_until = NULL, updated_at = now()
          FROM x
         WHERE r.id = x.id AND r.attempt = x.attempt AND r.locked_by = p_worker
           AND r.status = 'running'
        RETURNING r.id)
    SELECT id FROM u
    UNION ALL
    -- Already succeeded by an earlier commit of this same write (the snapshot
    -- here predates u, so u's own rows still look running and are not repeated).
    SELECT r.id FROM job_runs r JOIN x ON x.id = r.id
     WHERE r.status = 'succeeded' AND r.attempt = x.attempt
       AND EXISTS (SELECT 1 FROM job_run_claims c
                    WHERE c.run_id = r.id AND c.attempt = x.attempt AND c.worker = p_worker)
$$;

-- The delay before attempt n+1 after attempt n failed: capped exponential with
-- ±25% jitter, the same schedule the daemon uses for page retries.
CREATE FUNCTION job_retry_delay(p_attempt integer, p_base_ms bigint, p_cap_ms bigint)
RETURNS interval LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => least(p_cap_ms::double precision,
               least(p_cap_ms::double precision, p_base_ms * power(2::double precision, greatest(p_attempt - 1, 0)))
               * (0.75 + 0.5 * random())) / 1000.0)
$$;

-- Records a failed attempt. Retryable failures with attempts left go back to
-- queued after a backoff; the rest end as failed. Each failure is appended to
-- errors with the time the retry is due (retry_at), so the backoff schedule
-- can be read back. Returns the new status, or NULL when the caller no longer
-- holds the lease.
CREATE FUNCTION fail_job_run(p_worker text, p_id bigint, p_attempt integer, p_error text,
                             p_retryable boolean, p_base_ms bigint DEFAULT 5000,
                             p_cap_ms bigint DEFAULT 600000)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r job_runs;
    retry boolean;
    retry_at timestamptz;
BEGIN
    SELECT * INTO r FROM job_runs
     WHERE id = p_id AND attempt = p_attempt AND locked_by = p_worker AND status = 'running'
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    retry := p_retryable AND r.attempt < r.max_attempts;
    IF retry THEN
        retry_at := now() + job_retry_delay(r.attempt, p_base_ms, p_cap_ms);
    END IF;
    UPDATE job_runs
       SET status = CASE WHEN retry THEN 'queued' ELSE 'failed' END,
           run_after = coalesce(retry_at, run_after),
           finished_at = CASE WHEN retry THEN NULL ELSE now() END,
           last_error = p_error,
           errors = errors || jsonb_build_array(jsonb_build_object(
                        'at', now(), 'attempt', r.attempt, 'error', p_error, 'worker', p_worker,
                        'retry_at', retry_at)),
           locked_by = NULL, locked_until = NULL, updated_at = now()
     WHERE id = p_id;
    RETURN CASE WHEN retry THEN 'queued' ELSE 'failed' END;
END
$$;

-- Gives runs back without spending their attempt (graceful shutdown, bad
-- credentials: not the runs' fault). Returns the number released.
CREATE FUNCTION release_job_runs(p_worker text, p_ids bigint[], p_attempts integer[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    UPDATE job_runs r
       SET status = 'queued', attempt = r.attempt - 1, locked_by = NULL, locked_until = NULL,
           run_after = now(), updated_at = now()
      FROM unnest(p_ids, p_attempts) AS x(id, attempt)
     WHERE r.id = x.id AND r.attempt = x.attempt AND r.locked_by = p_worker
       AND r.status = 'running';
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Extends the leases of the runs a worker still holds, in one statement, and
-- records their progress. Returns the ids still held: a run missing from the
-- result was cancelled by an operator or taken over, and must be abandoned.
CREATE FUNCTION renew_job_leases(p_worker text, p_ids bigint[], p_attempts integer[],
                                 p_bars bigint[], p_lease_seconds double precision)
RETURNS SETOF bigint LANGUAGE sql AS $$
    UPDATE job_runs r
       SET locked_until = now() + make_interval(secs => p_lease_seconds),
           bars_written = x.bars, updated_at = now()
      FROM unnest(p_ids, p_attempts, p_bars) AS x(id, attempt, bars)
     WHERE r.id = x.id AND r.attempt = x.attempt AND r.locked_by = p_worker
       AND r.status = 'running'
    RETURNING r.id
$$;

-- Puts runs whose lease expired (their worker died or hung) back in the queue
-- with a backoff, or fails them when their attempts are spent. Safe to call
-- from every daemon at once (SKIP LOCKED). Returns the number rescued.
CREATE FUNCTION rescue_expired_job_runs(p_base_ms bigint DEFAULT 5000,
                                        p_cap_ms bigint DEFAULT 600000)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH x AS MATERIALIZED (
        SELECT id, CASE WHEN attempt < max_attempts
                        THEN now() + job_retry_delay(attempt, p_base_ms, p_cap_ms) END AS retry_at
          FROM job_runs
         WHERE status = 'running' AND locked_until < now()
           FOR UPDATE SKIP LOCKED)
    UPDATE job_runs r
       SET status = CASE WHEN x.retry_at IS NOT NULL THEN 'queued' ELSE 'failed' END,
           run_after = coalesce(x.retry_at, r.run_after),
           finished_at = CASE WHEN x.retry_at IS NOT NULL THEN NULL ELSE now() END,
           last_error = 'lease expired: worker ' || coalesce(r.locked_by, '?') || ' stopped renewing',
           errors = r.errors || jsonb_build_array(jsonb_build_object(
                        'at', now(), 'attempt', r.attempt,
                        'error', 'lease expired: worker ' || coalesce(r.locked_by, '?') || ' stopped renewing',
                        'worker', r.locked_by, 'rescued', true, 'retry_at', x.retry_at)),
           locked_by = NULL, locked_until = NULL, updated_at = now()
      FROM x WHERE r.id = x.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Turns enabled definitions into runs. Only one caller at a time does the
-- work (a transaction-level advisory lock); the others return 0 at once.
--  * fetch_historical: the chunks of [backfill_from, backfill_to or now)
--    not covered by succeeded, failed or cancelled runs;
--  * fetch_intraday: one run from the last stored bar (or now - lookback) to
--    now, every refresh_interval, never two at once.
CREATE FUNCTION schedule_due_jobs(p_max_attempts integer DEFAULT 5)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d record;
    n integer := 0;
    last_ts timestamptz;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('backfilld.schedule_due_jobs')) THEN
        RETURN 0;
    END IF;
    FOR d IN SELECT * FROM job_definitions
              WHERE enabled AND job_type = 'fetch_historical' AND backfill_from IS NOT NULL
                AND backfill_from < coalesce(backfill_to, now())
    LOOP
        n := n + enqueue_range(d.id, d.backfill_from,
                               coalesce(d.backfill_to, date_trunc('hour', now())),
                               false, p_max_attempts, false);
    END LOOP;
    FOR d IN SELECT * FROM job_definitions j
              WHERE enabled AND job_type = 'fetch_intraday'
                AND NOT EXISTS (SELECT 1 FROM job_runs r WHERE r.job_def_id = j.id
                                   AND (r.status IN ('queued','running')
                                        OR r.created_at > now() - j.refresh_interval))
    LOOP
        SELECT max(ts) INTO last_ts FROM bars WHERE symbol = d.symbol AND timeframe = d.timeframe;
        INSERT INTO job_runs (job_def_id, job_type, symbol, timeframe, feed, adjustment,
                              range_start, range_end, priority, max_attempts)
        VALUES (d.id, d.job_type, d.symbol, d.timeframe, d.feed, d.adjustment,
                least(coalesce(last_ts, now() - d.lookback), now() - interval '1 second'), now(),
                d.priority, coalesce(d.max_attempts, p_max_attempts))
        ON CONFLICT DO NOTHING;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

-- Wake-ups for daemons (a hint only: daemons also poll). One NOTIFY per
-- statement, not per row, so a bulk enqueue is one message.
CREATE FUNCTION backfilld_notify_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows WHERE status = 'queued') THEN
        PERFORM pg_notify('backfilld_runs', '');
    END IF;
    RETURN NULL;
END
$$;
-- Only statements that leave a run queued wake anyone: claims and completions
-- don't, so the daemons don't wake each other for nothing.
CREATE TRIGGER job_runs_notify_insert AFTER INSERT ON job_runs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION backfilld_notify_runs();
CREATE TRIGGER job_runs_notify_update AFTER UPDATE ON job_runs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION backfilld_notify_runs();

CREATE FUNCTION backfilld_notify_defs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('backfilld_defs', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER job_definitions_notify AFTER INSERT OR UPDATE OR DELETE ON job_definitions
    FOR EACH STATEMENT EXECUTE FUNCTION backfilld_notify_defs();

-- Operators re-prioritise definitions; their queued runs follow, so the claim
-- can order by job_runs.priority through its index.
CREATE FUNCTION backfilld_def_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.priority IS DISTINCT FROM OLD.priority THEN
        UPDATE job_runs SET priority = NEW.priority, updated_at = now()
         WHERE job_def_id = NEW.id AND status = 'queued';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER job_definitions_changed BEFORE UPDATE ON job_definitions
    FOR EACH ROW EXECUTE FUNCTION backfilld_def_changed();

-- The Alpaca request budget, shared by every daemon on this database: the
-- limit is per account, not per host. One row per account holds a token
-- bucket refilled continuously at per_minute/60 tokens a second, holding at
-- most one second's worth. Daemons take a few tokens at a time with
-- take_rate_tokens (one atomic statement; the row lock serialises hosts). A
-- 429 seen by any host pauses all of them (pause_rate_limit). Operators
-- change the rate live:  UPDATE rate_limits SET per_minute = 10000 WHERE name = 'alpaca';
-- UNLOGGED and fillfactor 50: a hot single row whose loss in a crash only
-- resets the bucket (the next take re-creates it).
CREATE UNLOGGED TABLE rate_limits (
    name         text PRIMARY KEY,
    per_minute   double precision NOT NULL CHECK (per_minute > 0),
    tokens       double precision NOT NULL DEFAULT 0,
    refreshed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    paused_until timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);

-- Grants up to p_want tokens now. wait_ms is how long until the next token
-- (0 when everything asked for was granted). p_default_per_minute creates the
-- row if it is missing. clock_timestamp(), not now(): now() is frozen at the
-- start of the transaction.
CREATE FUNCTION take_rate_tokens(p_name text, p_want integer, p_default_per_minute double precision)
RETURNS TABLE (granted integer, wait_ms integer, per_minute double precision)
LANGUAGE plpgsql AS $$
DECLARE
    r rate_limits;
    t timestamptz := clock_timestamp();
    cap double precision;
    avail double precision;
    g integer;
BEGIN
    INSERT INTO rate_limits (name, per_minute, tokens, refreshed_at)
    VALUES (p_name, p_default_per_minute, 0, t) ON CONFLICT (name) DO NOTHING;
    SELECT * INTO r FROM rate_limits WHERE name = p_name FOR UPDATE;
    IF r.paused_until IS NOT NULL AND r.paused_until > t THEN
        RETURN QUERY SELECT 0, ceil(extract(epoch FROM r.paused_until - t) * 1000)::integer, r.per_minute;
        RETURN;
    END IF;
    cap := greatest(1.0, r.per_minute / 60.0);
    avail := least(cap, r.tokens + r.per_minute / 60.0 * greatest(0, extract(epoch FROM t - r.refreshed_at)));
    g := least(p_want, floor(avail))::integer;
    UPDATE rate_limits SET tokens = avail - g, refreshed_at = t WHERE name = p_name;
    RETURN QUERY SELECT g,
        CASE WHEN g >= p_want THEN 0
             ELSE ceil((1.0 - (avail - g)) * 60000.0 / r.per_minute)::integer END,
        r.per_minute;
END
$$;

-- After a 429: nobody gets a token for p_ms, and the bucket starts empty.
CREATE FUNCTION pause_rate_limit(p_name text, p_ms integer) RETURNS void
LANGUAGE sql AS $$
    UPDATE rate_limits
       SET paused_until = greatest(coalesce(paused_until, clock_timestamp()),
                                   clock_timestamp() + make_interval(secs => p_ms / 1000.0)),
           refreshed_at = greatest(coalesce(paused_until, clock_timestamp()),
                                   clock_timestamp() + make_interval(secs => p_ms / 1000.0)),
           tokens = 0
     WHERE name = p_name
$$;

-- A daemon's configured rate (BACKFILLD_RATE_LIMIT), written at start and on
-- SIGHUP; an operator's UPDATE holds until then.
CREATE FUNCTION set_rate_limit(p_name text, p_per_minute double precision) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO rate_limits (name, per_minute) VALUES (p_name, p_per_minute)
    ON CONFLICT (name) DO UPDATE SET per_minute = EXCLUDED.per_minute, updated_at = now()
$$;
