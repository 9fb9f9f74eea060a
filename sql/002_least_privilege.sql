-- backfilld schema, version 2: the daemon can run as a role that may do only
-- what the daemon does.
--
-- The queue's functions run with the rights of their owner (the role that
-- migrates), with the search_path they were created under, and only roles
-- they are granted to may call them: PUBLIC's default EXECUTE is revoked.
-- A daemon role then needs no right on the queue's tables beyond reading
-- them (the progress and idle checks count runs), plus writing bars.
-- `backfilld migrate --create-role NAME` grants exactly that; --print-role-sql
-- prints it instead. The role that owns the schema keeps every right.

ALTER FUNCTION claim_queued_job(text, integer, double precision) SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION complete_job_runs(text, bigint[], integer[], bigint[], integer[]) SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION fail_job_run(text, bigint, integer, text, boolean, bigint, bigint) SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION release_job_runs(text, bigint[], integer[]) SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION renew_job_leases(text, bigint[], integer[], bigint[], double precision) SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION rescue_expired_job_runs(bigint, bigint) SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION schedule_due_jobs(integer) SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION take_rate_tokens(text, integer, double precision) SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION pause_rate_limit(text, integer) SECURITY DEFINER SET search_path FROM CURRENT;
ALTER FUNCTION set_rate_limit(text, double precision) SECURITY DEFINER SET search_path FROM CURRENT;

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
