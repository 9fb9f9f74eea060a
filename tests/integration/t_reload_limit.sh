#!/usr/bin/env bash
# A SIGHUP that changes BACKFILLD_PAGE_LIMIT in the middle of a pagination.
# A page token belongs to the exact query that produced it (the simulator
# answers 400 "invalid page_token" to a token sent with another limit, which
# failed the whole run for good before): the fetch under way keeps the limit
# it started with, and the next fetch uses the new one.
. "$(dirname "$0")/lib.sh"

pg_start
# 300 ms a page until the walk is held: its 34 pages take ~10 s, so the hold
# lands mid-walk however late a loaded machine sees the second page (at 20
# ms the whole walk took 0.86 s and was once over before the hold).
sim_start --latency-ms 300
bf migrate >/dev/null
bf enqueue --symbols AAPL --timeframe h1 --from 2024-01-01 --to 2024-01-31 >/dev/null
check "one run" "1" "$(sql "SELECT count(*) FROM job_runs")"
cat >"$T/backfilld.conf" <<EOF
BACKFILLD_PAGE_LIMIT=10
BACKFILLD_RATE_LIMIT=600000
BACKFILLD_BATCH_SYMBOLS=1
BACKFILLD_HTTP_TIMEOUT_MS=1500
BACKFILLD_RETRY_BASE_MS=20
EOF
"$BF_BIN" --config "$T/backfilld.conf" run 2>>"$T/d1.log" &
D=$!
PIDS+=("$D")
pages_ge() { [ "$(sim_counter 'c["pages"]')" -ge "$1" ]; }
wait_for "two pages served" 30 pages_ge 2
# Hold the walk where it is: the next page hangs until the HTTP timeout, and
# is asked again (with its token) once the limit has changed.
sim_get "/__sim/set?hang_rate=1" >/dev/null
sed -i 's/^BACKFILLD_PAGE_LIMIT=10$/BACKFILLD_PAGE_LIMIT=5/' "$T/backfilld.conf"
kill -HUP "$D"
wait_for "the reload applied" 15 grep -q '"msg":"configuration reloaded"' "$T/d1.log"
check "the walk was still going when the limit changed" "running" \
    "$(sql "SELECT status FROM job_runs WHERE symbol = 'AAPL'")"
sim_get "/__sim/set?hang_rate=0&latency_ms=20" >/dev/null
wait_for "the run finished" 60 sql_eq "SELECT count(*) FROM job_runs WHERE status IN ('succeeded', 'failed')" 1
check "the run succeeded on its first attempt" "succeeded|1" \
    "$(sql "SELECT status, attempt FROM job_runs WHERE symbol = 'AAPL'")"
BARS=$(sql "SELECT bars_written FROM job_runs WHERE symbol = 'AAPL'")
check "every page of it asked with limit=10 ($BARS bars)" "$(((BARS + 9) / 10))" \
    "$(sql "SELECT pages FROM job_runs WHERE symbol = 'AAPL'")"
check "no 400 from the simulator" "0" "$(sim_counter 'c["by_status"].get("400", 0)')"

# The next fetch takes the new limit.
bf enqueue --symbols MSFT --timeframe h1 --from 2024-01-01 --to 2024-01-31 >/dev/null
wait_for "the second run finished" 60 sql_eq "SELECT count(*) FROM job_runs WHERE status IN ('succeeded', 'failed')" 2
BARS2=$(sql "SELECT bars_written FROM job_runs WHERE symbol = 'MSFT'")
check "the next fetch asks with limit=5 ($BARS2 bars)" "succeeded|$(((BARS2 + 4) / 5))" \
    "$(sql "SELECT status, pages FROM job_runs WHERE symbol = 'MSFT'")"
kill -TERM "$D"
daemon_wait "$D" 30
check "SIGTERM exits 0" "0" "$DAEMON_RC"
load_expected h1 --symbols AAPL,MSFT --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-01-31)"
check_bars_exact
finish
