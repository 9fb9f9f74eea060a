#!/usr/bin/env bash
# A dead Alpaca: first connections that are accepted and never answered, then
# answers that stall mid-body. Every request is cut off by the HTTP timeout
# and retried (each retry logged with the job, the symbol and the cause);
# nothing waits forever, no request times out while it waits for one of the
# BACKFILLD_MAX_CONNECTIONS connections (8 runs share 4 here), the
# connections held open do not pile up, and the daemon's memory stays
# bounded. Once the server answers again every run completes, exactly.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start --hang-rate 1
bf migrate >/dev/null
SYMS="AAPL,MSFT,NVDA,AMZN,META,GOOGL,TSLA,JPM,V,XOM"
bf enqueue --symbols "$SYMS" --timeframe h1 --from 2024-01-01 --to 2024-03-31 --max-attempts 100 >/dev/null
TOTAL=$(sql "SELECT count(*) FROM job_runs")
check "30 runs queued" "30" "$TOTAL"

export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_HTTP_TIMEOUT_MS=700 BACKFILLD_CONNECT_TIMEOUT_MS=700 \
    BACKFILLD_PAGE_RETRIES=2 BACKFILLD_RETRY_BASE_MS=20 BACKFILLD_RETRY_MAX_MS=100 \
    BACKFILLD_RUN_RETRY_BASE_MS=50 BACKFILLD_RUN_RETRY_MAX_MS=300 BACKFILLD_BATCH_SYMBOLS=1 \
    BACKFILLD_CONCURRENCY=8 BACKFILLD_MAX_CONNECTIONS=4 BACKFILLD_PROGRESS_INTERVAL_MS=500
daemon_start d1 --until-idle
D=$DAEMON_PID

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$D/status"; }
# held_ok: the connections the simulator holds open stay within the daemon's pool.
MAXHELD=0
note_held() {
    local h
    h=$(sim_counter 'c["held"]')
    [ "$h" -gt "$MAXHELD" ] && MAXHELD=$h
    return 0
}
retries_with() { count_ge "$T/d1.log" "\"msg\":\"page retry\",\"job_id\":[0-9]*,\"symbol\":\"[A-Z]*\".*\"error\":\"$1" "$2"; }

# 1. Accepted and never answered.
hung_enough() { note_held; [ "$(sim_counter 'c["hung"]')" -ge 40 ]; }
wait_for "40 requests hung" 60 hung_enough
check_cmd "hung requests were cut off by the timeout and retried, naming job, symbol and cause" \
    retries_with "request failed: Operation timed out after [0-9]* milliseconds with 0 bytes received" 10
RSS1=$(rss_kb)

# 2. Headers and half a body, then nothing.
sim_get "/__sim/set?hang_rate=0&stall_rate=1" >/dev/null
base=$(sim_counter 'c["stalled"]')
stalled_enough() { note_held; [ "$(sim_counter 'c["stalled"]')" -ge $((base + 40)) ]; }
wait_for "40 responses stalled" 60 stalled_enough
check "no run finished while nothing was answered" "0" \
    "$(sql "SELECT count(*) FROM job_runs WHERE status IN ('succeeded', 'failed')")"
RSS2=$(rss_kb)
log "daemon RSS ${RSS1} kB after the hangs, ${RSS2} kB after the stalls; simulator held at most $MAXHELD connections"
check_cmd "connections held open stay within the pool (at most $MAXHELD <= 4 + 4 closing)" test "$MAXHELD" -le 8
check_cmd "the daemon's memory stays bounded (${RSS2} kB < 200 MB)" test "$RSS2" -lt 204800
check_cmd "stalled bodies were cut off by the timeout too" \
    retries_with "request failed: Operation timed out after [0-9]* milliseconds with [1-9][0-9]* out of [0-9]* bytes received" 5
check "no request timed out while waiting for a connection" "0" \
    "$(grep -c 'Failed to resolve host' "$T/d1.log" || true)"
check_cmd "attempts were spent and retried, not abandoned" \
    grep -q '"msg":"run attempt failed, will retry"' "$T/d1.log"

# 3. The server answers again.
sim_get "/__sim/set?stall_rate=0" >/dev/null
daemon_wait "$D" 120
check "the daemon exits 0 once Alpaca is back" "0" "$DAEMON_RC"
check "every run succeeded" "$TOTAL" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
load_expected h1 --symbols "$SYMS" --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-03-31)"
check_bars_exact
held_none() { [ "$(sim_counter 'c["held"]')" = 0 ]; }
wait_for "the simulator holds no connection once the daemon is gone" 10 held_none
finish
