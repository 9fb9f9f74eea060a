#!/usr/bin/env bash
# kill -9 in the middle of a 200-run backfill, then a restart: every run ends
# succeeded, the data is complete and exact, and the killed host's runs were
# rescued by lease expiry (recorded in their error history), not by hand.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start --latency-ms 250
bf migrate >/dev/null
SYMS="AAPL,AMZN,GOOGL,META,MSFT,NVDA,TSLA,JPM,V,XOM"
bf enqueue --symbols "$SYMS" --timeframe h1 --from 2023-05-01 --to 2024-12-31 >/dev/null
check "200 runs queued" "200" "$(sql "SELECT count(*) FROM job_runs")"

export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_CONCURRENCY=8 BACKFILLD_RUN_RETRY_BASE_MS=100
# d1 has a short lease, so its runs expire soon after the kill, and never runs a
# rescue itself after its start (a stall longer than 2 s must not make it rescue its
# own runs). d2 keeps the default 30 s lease, so only d1's leases can expire.
BACKFILLD_LEASE_SECONDS=3 BACKFILLD_RESCUE_INTERVAL_MS=600000 daemon_start d1
wait_for "40 runs done" 60 sql_ge "SELECT count(*) FROM job_runs WHERE status = 'succeeded'" 40
kill -9 "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 10
# A claim or a completion d1 had already sent still runs (and may commit) in its
# Postgres sessions: count the orphans only once those sessions are gone.
wait_for "the killed daemon's sessions are gone" 30 \
    sql_eq "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'backfilld'" 0
W1=$(grep -o '"msg":"ready","worker":"[^"]*"' "$T/d1.log" | sed 's/.*"worker":"//; s/"$//')
orphans=$(sql "SELECT count(*) FROM job_runs WHERE status = 'running' AND locked_by = '$W1'")
log "killed $W1 with $orphans runs in flight"
check_cmd "the kill left runs in flight" test "$orphans" -gt 0
check "nothing was rescued before d2 started" "0" \
    "$(sql "SELECT count(*) FROM job_runs WHERE errors @> '[{\"rescued\": true}]'")"

BACKFILLD_RESCUE_INTERVAL_MS=300 daemon_start d2 --until-idle
daemon_wait "$DAEMON_PID" 120
check "the restarted daemon exits 0" "0" "$DAEMON_RC"
check "every run succeeded" "200" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
check "the orphans were rescued by lease expiry" "$orphans" \
    "$(sql "SELECT count(*) FROM job_runs WHERE errors @> '[{\"rescued\": true, \"worker\": \"$W1\"}]'")"
check "and finished on their second attempt" "$orphans" \
    "$(sql "SELECT count(*) FROM job_runs WHERE attempt = 2 AND errors @> '[{\"rescued\": true}]'")"
check "no other run was rescued" "$orphans" \
    "$(sql "SELECT count(*) FROM job_runs WHERE errors @> '[{\"rescued\": true}]'")"
grep -q '"msg":"expired leases rescued"' "$T/d2.log" || fail "no rescue logged"
load_expected h1 --symbols "$SYMS" --timeframe 1Hour --start "$(ny 2023-05-01)" --end "$(ny_end 2024-12-31)"
check_bars_exact
finish
