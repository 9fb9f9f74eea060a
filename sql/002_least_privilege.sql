-- backfilld schema, version 2: the daemon can run as a role that may do only
-- what the daemon does.
--
-- The queue's functions run with the rights of their owner (the role that
-- migrates), with the search_path pinned to this schema, and only roles
-- they are granted to may call them: PUBLIC's default EXECUTE is revoked
-- (a daemon role that is not the owner needs `migrate --grant-role NAME`).
-- A daemon role then needs no right on the queue's tables beyond reading
-- them (the progress and idle checks count runs), plus writing bars.
-- `backfilld migrate --create-role NAME` grants exactly that; --print-role-sql
-- prints it instead. The role that owns the schema keeps every right.

-- The search_path is this schema, then pg_temp last: a function that looked
-- in pg_temp first (the default when it is not named) would let a caller's
-- temporary table or function stand in for the queue's, with the owner's rights.
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'claim_queued_job(text, integer, double precision)',
        'complete_job_runs(text, bigint[], integer[], bigint[], integer[])',
        'fail_job_run(text, bigint, integer, text, boolean, bigint, bigint)',
        'release_job_runs(text, bigint[], integer[])',
        'renew_job_leases(text, bigint[], integer[], bigint[], double precision)',
        'rescue_expired_job_runs(bigint, bigint)',
        'schedule_due_jobs(integer)',
        'take_rate_tokens(text, integer, double precision)',
        'pause_rate_limit(text, integer)',
        'set_rate_limit(text, double precision)']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %I, pg_temp',
                       f, current_schema());
    END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION
    claim_queued_job(text, integer, double precision),
    complete_job_runs(text, bigint[], integer[], bigint[], integer[]),
    fail_job_run(text, bigint, integer, text, boolean, bigint, bigint),
    release_job_runs(text, bigint[], integer[]),
    renew_job_leases(text, bigint[], integer[], bigint[], double precision),
    rescue_expired_job_runs(bigint, bigint),
    schedule_due_jobs(integer),
    take_rate_tokens(text, integer, double precision),
    pause_rate_limit(text, integer),
    set_rate_limit(text, double precision)
    FROM PUBLIC;
