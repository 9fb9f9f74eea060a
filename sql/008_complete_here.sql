-- backfilld schema, version 8: completing a run counts its stored bars only
-- when some were written before the completing transaction (issue #11).
--
-- complete_job_runs (version 3) checks, per run, that the bars its pages
-- wrote are still stored, so that pages lost with a crash or failover
-- between two write transactions are fetched again rather than marked done.
-- That count reads back every bar just written: ~0.6 us of Postgres time a
-- bar, a fifth of a backfill's whole cost in the database (write_ceiling.sh).
-- It cannot find anything missing when every bar of the run is in the
-- transaction that completes it: those bars commit with the completion or
-- not at all. The daemon now passes, per run, the bars of its pages in this
-- transaction (p_here); the count runs only for runs with bars written
-- earlier (p_here < p_bars), or for every run when p_here is NULL (as before).
--
-- A new argument: the function is dropped and made anew, its grantees noted
-- and granted it again, as version 6 did for schedule_due_jobs.
SELECT set_config('backfilld.complete_grantees',
                  coalesce(string_agg(DISTINCT a.grantee::regrole::text, ','), ''), true)
  FROM pg_proc p, aclexplode(p.proacl) a
 WHERE p.oid = 'complete_job_runs(text, bigint[], integer[], bigint[], integer[])'::regprocedure
   AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner AND a.grantee <> 0;
DROP FUNCTION complete_job_runs(text, bigint[], integer[], bigint[], integer[]);
CREATE FUNCTION complete_job_runs(p_worker text, p_ids bigint[], p_attempts integer[],
                                  p_bars bigint[], p_pages integer[], p_here bigint[] DEFAULT NULL)
RETURNS SETOF bigint LANGUAGE sql AS $$
    WITH x AS (
        SELECT x.*, CASE WHEN x.here >= x.bars THEN x.bars
                         ELSE (SELECT count(*) FROM bars b
                                WHERE b.symbol = r.symbol AND b.timeframe = r.timeframe
                                  AND b.feed = r.feed AND b.adjustment = r.adjustment
                                  AND b.ts >= r.range_start AND b.ts < r.range_end) END AS stored
          -- (unnest pads a NULL or shorter p_here with NULLs: those runs are counted)
          FROM unnest(p_ids, p_attempts, p_bars, p_pages, p_here) AS x(id, attempt, bars, pages, here)
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
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION complete_job_runs(text, bigint[], integer[], bigint[], integer[], bigint[]) '
                   'SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
    IF current_setting('backfilld.complete_grantees') <> '' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION complete_job_runs(text, bigint[], integer[], bigint[], '
                       'integer[], bigint[]) TO %s', current_setting('backfilld.complete_grantees'));
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION complete_job_runs(text, bigint[], integer[], bigint[], integer[], bigint[])
    FROM PUBLIC;
