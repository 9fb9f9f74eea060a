#!/usr/bin/env bash
# Housekeeping never delays a lease: a scheduler call that takes three times
# the lease (a definition trigger with pg_sleep here; a huge backlog in life)
# runs on the main session while runs are being fetched. Lease renewals and
# rate-limit tokens have a session of their own, so while the scheduler
# sleeps the leases are still renewed and requests still go out; afterwards
# no run lost its lease, none was rescued, and every one succeeded on its
# first attempt with exact data.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start --latency-ms 400
bf migrate >/dev/null
# The scheduler's second call sleeps 10 s.
slow_scheduler 2 10
SYMS="AAPL,MSFT"
bf enqueue --symbols "$SYMS" --timeframe h1 --from 2024-01-01 --to 2024-04-30 >/dev/null
TOTAL=$(sql "SELECT count(*) FROM job_runs")
check "8 runs queued" "8" "$TOTAL"

export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_BATCH_SYMBOLS=1 BACKFILLD_CONCURRENCY=4 \
    BACKFILLD_PAGE_LIMIT=10 BACKFILLD_LEASE_SECONDS=3 BACKFILLD_RESCUE_INTERVAL_MS=500 \
    BACKFILLD_SCHEDULE_INTERVAL_MS=2000
daemon_start d1 --until-idle
sleeping() {
    sql_eq "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'backfilld' AND wait_event = 'PgSleep'" 1
}
wait_for "the scheduler's slow call" 30 sleeping
req0=$(sim_counter 'c["requests"]')
lease0=$(sql "SELECT coalesce(extract(epoch FROM max(locked_until)), 0) FROM job_runs WHERE status = 'running'")
check "four runs in flight as the scheduler sleeps" "4" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'running'")"
# While it sleeps: requests go out and leases move on (checked while the sleep still holds).
# Each run walks ~33 pages of 10 bars at 400 ms a page, so the four in flight when
# the sleep begins are still fetching when it ends: their leases must be renewed.
going_on() {
    sleeping &&
        [ "$(sim_counter 'c["requests"]')" -ge $((req0 + 5)) ] &&
        sql_eq "SELECT (coalesce(extract(epoch FROM min(locked_until)), 0) >= $lease0 + 1)::int FROM job_runs WHERE status = 'running'" 1
}
wait_for "requests and renewals while the scheduler sleeps" 8 going_on
check_cmd "the scheduler was still sleeping" sleeping
daemon_wait "$DAEMON_PID" 180
check "the daemon exits 0" "0" "$DAEMON_RC"
check "every run succeeded on its first attempt" "$TOTAL|$TOTAL" \
    "$(sql "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded' AND attempt = 1) FROM job_runs")"
check "no run was rescued" "0" "$(sql "SELECT count(*) FROM job_runs WHERE errors::text LIKE '%rescued%'")"
check "no run lost its lease" "0" "$(grep -c 'lease lost\|run abandoned' "$T/d1.log" || true)"
load_expected h1 --symbols "$SYMS" --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-04-30)"
check_bars_exact
finish
