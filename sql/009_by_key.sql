-- backfilld schema, version 9: the calls that name a worker's runs find them
-- by key, whatever the planner believes about job_runs (issue #11).
--
-- renew_job_leases, release_job_runs and complete_job_runs join the ids they
-- are given to job_runs with, on the run, status = 'running' and locked_by =
-- the worker. When the table's statistics say few runs are running (always
-- so at the start of a backfill: they were gathered while the runs were
-- queued), the planner took those conditions for an index scan of a row or
-- two and joined the ids to each row found by scanning the whole array
-- again: held runs × ids. Measured on 600 held runs: a renewal 105 ms of
-- which 87 ms in 359,400 rejected pairs, a completion of 600 runs 58 ms; at
-- the default 2,000 runs in flight a renewal was 4 million pairs.
--
-- Now the conditions on the status and the worker are written against the
-- ids' side: columns of a subquery over the unnest, kept a subquery by
-- OFFSET 0 so that the planner cannot see they are constants and hand them
-- back to job_runs as a filter to scan by. job_runs has only the key to be
-- found by, so each id is one primary-key probe (or one hash join on a
-- small table), never a scan per row. What each call does is unchanged.
--
-- Same arguments: CREATE OR REPLACE keeps the grants, but resets SECURITY
-- DEFINER and the pinned search_path, which are set again below.

CREATE OR REPLACE FUNCTION renew_job_leases(p_worker text, p_ids bigint[], p_attempts integer[],
                                            p_bars bigint[], p_lease_seconds double precision)
RETURNS SETOF bigint LANGUAGE sql AS $$
    UPDATE job_runs r
       SET locked_until = now() + make_interval(secs => p_lease_seconds),
           bars_written = x.bars, updated_at = now()
      FROM (SELECT x.*, p_worker AS worker, 'running'::text AS status
              FROM unnest(p_ids, p_attempts, p_bars) AS x(id, attempt, bars) OFFSET 0) x
     WHERE r.id = x.id AND r.attempt = x.attempt AND r.locked_by = x.worker
       AND r.status = x.status
    RETURNING r.id
$$;

CREATE OR REPLACE FUNCTION release_job_runs(p_worker text, p_ids bigint[], p_attempts integer[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    UPDATE job_runs r
       SET status = 'queued', attempt = r.attempt - 1, locked_by = NULL, locked_until = NULL,
           run_after = now(), updated_at = now()
      FROM (SELECT x.*, p_worker AS worker, 'running'::text AS status
              FROM unnest(p_ids, p_attempts) AS x(id, attempt) OFFSET 0) x
     WHERE r.id = x.id AND r.attempt = x.attempt AND r.locked_by = x.worker
       AND r.status = x.status;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- As version 8, with the runs found by key: in x (running, this worker's)
-- and in the last part (succeeded by a commit the worker did not see).
CREATE OR REPLACE FUNCTION complete_job_runs(p_worker text, p_ids bigint[], p_attempts integer[],
                                             p_bars bigint[], p_pages integer[],
                                             p_here bigint[] DEFAULT NULL)
RETURNS SETOF bigint LANGUAGE sql AS $$
    WITH x AS (
        SELECT x.*, CASE WHEN x.here >= x.bars THEN x.bars
                         ELSE (SELECT count(*) FROM bars b
                                WHERE b.symbol = r.symbol AND b.timeframe = r.timeframe
                                  AND b.feed = r.feed AND b.adjustment = r.adjustment
                                  AND b.ts >= r.range_start AND b.ts < r.range_end) END AS stored
          -- (unnest pads a NULL or shorter p_here with NULLs: those runs are counted)
          FROM (SELECT x.*, p_worker AS worker, 'running'::text AS status
                  FROM unnest(p_ids, p_attempts, p_bars, p_pages, p_here)
                       AS x(id, attempt, bars, pages, here) OFFSET 0) x
          JOIN job_runs r ON r.id = x.id AND r.attempt = x.attempt AND r.locked_by = x.worker
                         AND r.status = x.status),
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
    SELECT r.id
      FROM (SELECT y.*, 'succeeded'::text AS status
              FROM unnest(p_ids, p_attempts) AS y(id, attempt) OFFSET 0) y
      JOIN job_runs r ON r.id = y.id AND r.attempt = y.attempt AND r.status = y.status
     WHERE EXISTS (SELECT 1 FROM job_run_claims c
                    WHERE c.run_id = y.id AND c.attempt = y.attempt AND c.worker = p_worker)
$$;

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'renew_job_leases(text, bigint[], integer[], bigint[], double precision)',
        'release_job_runs(text, bigint[], integer[])',
        'complete_job_runs(text, bigint[], integer[], bigint[], integer[], bigint[])']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %I, pg_temp',
                       f, current_schema());
    END LOOP;
END
$$;
