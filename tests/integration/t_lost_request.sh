#!/usr/bin/env bash
# The database session dies while a slow request is in flight and a claim
# waits behind it. After the reconnect the waiting claim is sent and
# answered; the "release runs of an unanswered claim" step must not take
# that claim's runs for lost ones. Before the fix it did: the release ran
# after the replayed claim with the list of runs known before it, gave its
# runs back while they were being fetched, and every one of them ended with
# "run not completed: lease lost" and was fetched twice.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start
bf migrate >/dev/null
# A scheduler that sleeps on its first call, long enough to be the request in flight.
slow_scheduler 1 60
bf enqueue --symbols "AAPL,MSFT,NVDA,AMZN" --timeframe h1 --from 2024-01-01 --to 2024-12-31 >/dev/null
TOTAL=$(sql "SELECT count(*) FROM job_runs")

export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_BATCH_SYMBOLS=1 BACKFILLD_CONCURRENCY=4 \
    BACKFILLD_POLL_INTERVAL_MS=100 BACKFILLD_LOG_LEVEL=debug BACKFILLD_WORKER_ID=w1
daemon_start d1 --until-idle
sleeping() {
    sql_eq "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'backfilld' AND wait_event = 'PgSleep'" 1
}
wait_for "the scheduler call in flight (sleeping)" 30 sleeping
wait_for "a claim queued behind it" 30 grep -Eq '"msg":"claim sent","runs_asked":[1-9][0-9]*,"queued_behind":[1-9]' "$T/d1.log"
check "the sleeping session killed" "t" \
    "$(sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'backfilld' AND wait_event = 'PgSleep'")"
daemon_wait "$DAEMON_PID" 120
check "the daemon exits 0" "0" "$DAEMON_RC"
check_cmd "the loss was logged" grep -q '"msg":"db connection lost"' "$T/d1.log"
check "no run of the answered claim was given back" "0" \
    "$(grep -c '"msg":"runs of an unanswered claim released"' "$T/d1.log" || true)"
check "no run lost its lease" "0" "$(grep -c 'lease lost' "$T/d1.log" || true)"
check "every run succeeded on its first attempt" "$TOTAL|$TOTAL" \
    "$(sql "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded' AND attempt = 1) FROM job_runs")"
check "each run fetched once ($TOTAL requests)" "$TOTAL" "$(sim_counter 'c["requests"]')"
load_expected h1 --symbols "AAPL,MSFT,NVDA,AMZN" --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-12-31)"
check_bars_exact
finish
