#!/usr/bin/env bash
# A run that keeps failing: its retries follow the capped, jittered
# exponential schedule (read back from run_after/retry_at, not slept through),
# no attempt starts before its retry time, and when attempts are spent it
# ends failed with the whole history.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start --fail-rate 1
bf migrate >/dev/null
bf enqueue --symbols AAPL --timeframe d1 --from 2024-01-01 --to 2024-12-31 --max-attempts 4 >/dev/null
export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_PAGE_RETRIES=0 BACKFILLD_RUN_RETRY_BASE_MS=300 \
    BACKFILLD_RUN_RETRY_MAX_MS=1000 BACKFILLD_POLL_INTERVAL_MS=50
daemon_start d1 --until-idle
daemon_wait "$DAEMON_PID" 60
check "daemon exits 0" "0" "$DAEMON_RC"
check "failed after 4 attempts" "failed|4|4" "$(sql "SELECT status, attempt, jsonb_array_length(errors) FROM job_runs")"
# Attempt n waits base * 2^(n-1) +-25%, capped: 300, 600, then 1000 (cap; jitter stays under it).
for n in 1 2 3; do
    ms=$(sql "SELECT round(extract(epoch FROM (e->>'retry_at')::timestamptz - (e->>'at')::timestamptz) * 1000)
              FROM job_runs, jsonb_array_elements(errors) e WHERE (e->>'attempt')::int = $n")
    case $n in 1) lo=225 hi=375 ;; 2) lo=450 hi=750 ;; 3) lo=750 hi=1000 ;; esac
    check_cmd "retry after attempt $n waits ${ms} ms, within [$lo, $hi]" test "$ms" -ge "$lo" -a "$ms" -le "$hi"
done
check "no retry time after the last attempt" "" "$(sql "SELECT errors->3->>'retry_at' FROM job_runs")"
check "no attempt started before its retry time" "0" "$(sql "SELECT count(*) FROM job_runs r, jsonb_array_elements(r.errors) e
    JOIN job_run_claims c ON c.attempt = (e->>'attempt')::int + 1
    WHERE c.run_id = r.id AND c.claimed_at < (e->>'retry_at')::timestamptz")"
check "every error names the cause" "4" "$(sql "SELECT count(*) FROM job_runs, jsonb_array_elements(errors) e WHERE e->>'error' LIKE 'HTTP 5%'")"
check "last_error is the last cause" "t" "$(sql "SELECT last_error = errors->3->>'error' FROM job_runs")"
finish
