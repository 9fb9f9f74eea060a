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

export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_CONCURRENCY=8 BACKFILLD_LEASE_SECONDS=3 \
    BACKFILLD_RESCUE_INTERVAL_MS=300 BACKFILLD_RUN_RETRY_BASE_MS=100
daemon_start d1
wait_for "40 runs done" 60 sql_ge "SELECT count(*) FROM job_runs WHERE status = 'succeeded'" 40
kill -9 "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 10
W1=$(grep -o '"msg":"ready","worker":"[^"]*"' "$T/d1.log" | sed 's/.*"worker":"//; s/"$//')
orphans=$(sql "SELECT count(*) FROM job_runs WHERE status = 'running' AND locked_by = '$W1'")
log "killed $W1 with $orphans runs in flight"
check_cmd "the kill left runs in flight" test "$orphans" -gt 0

daemon_start d2 --until-idle
daemon_wait "$DAEMON_PID" 120
check "the restarted daemon exits 0" "0" "$DAEMON_RC"
check "every run succeeded" "200" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
check "the orphans were rescued by lease expiry" "$orphans" \
    "$(sql "SELECT count(*) FROM job_runs WHERE errors @> '[{\"rescued\": true, \"worker\": \"$W1\"}]'")"
check "and finished on their second attempt" "$orphans" \
    "$(sql "SELECT count(*) FROM job_runs WHERE attempt = 2 AND errors @> '[{\"rescued\": true}]'")"
grep -q '"msg":"expired leases rescued"' "$T/d2.log" || fail "no rescue logged"
load_expected h1 --symbols "$SYMS" --timeframe 1Hour --start 2023-05-01T00:00:00Z --end 2024-12-31T23:59:59Z
check "bar count equals the simulator's" "$(sql "SELECT count(*) FROM expected_bars")" "$(sql "SELECT count(*) FROM bars")"
check "every value equals the simulator's" "0" "$(bars_diff)"
finish
