-- backfilld schema, version 3: a run is completed only if all its bars are there.
--
-- A run's pages commit in several write transactions; only the last one
-- completes the run. A commit that was acknowledged and then lost (an
-- asynchronous commit before a crash, a failover to a standby that had not
-- received it) took earlier pages with it, yet the run's claim survived, so
-- the fence passed and the run was marked succeeded with a gap. Now the
-- completion also counts the bars stored in the run's range: fewer than the
-- daemon wrote means pages were lost, and the run is queued again (an attempt
-- spent, as for any failed attempt, so a source that keeps disagreeing ends
-- as failed instead of looping) with the reason in its errors.
-- The primary key (symbol, timeframe, ts) serves the count.

CREATE OR REPLACE FUNCTION complete_job_runs(p_worker text, p_ids bigint[], p_attempts integer[],
                                             p_bars bigint[], p_pages integer[])
RETURNS SETOF bigint LANGUAGE sql AS $$
    WITH x AS (
        SELECT x.*, (SELECT count(*) FROM bars b
                      WHERE b.symbol = r.symbol AND b.timeframe = r.timeframe
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
    -- Already succeeded by an earlier commit of this same write (the snapshot
    -- here predates u, so u's own rows still look running and are not repeated).
    SELECT r.id FROM job_runs r JOIN unnest(p_ids, p_attempts) AS y(id, attempt) ON y.id = r.id
     WHERE r.status = 'succeeded' AND r.attempt = y.attempt
       AND EXISTS (SELECT 1 FROM job_run_claims c
                    WHERE c.run_id = r.id AND c.attempt = y.attempt AND c.worker = p_worker)
$$;

-- CREATE OR REPLACE resets what 002 set: the owner's rights, this schema then pg_temp.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION complete_job_runs(text, bigint[], integer[], bigint[], integer[]) '
                   'SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END
$$;
