#!/usr/bin/env bash
# make demo: the main job, start to finish, on a private Postgres and the
# Alpaca simulator: migrate, start the daemon in the background (its JSON log
# goes to a file), enqueue 50 symbols x one year of h1 bars with --wait, which
# draws a progress bar with an ETA until every run has finished, then print a
# summary, `backfilld status` and a sample query.
# Everything lives in one temp directory, removed on exit (also on Ctrl-C).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export SRC_DIR=$ROOT BF_BIN=${BF_BIN:-$ROOT/build/backfilld} BF_SIM=${BF_SIM:-$ROOT/build/alpaca-sim}
. "$ROOT/tests/integration/lib.sh"
trap 'exit 130' INT TERM

echo "== backfilld demo: 50 symbols x 2024, 1-hour bars =="
echo "-- starting a private PostgreSQL 15 in $T"
pg_start
# A little latency and a token bucket make the simulator behave like a (fast) Alpaca.
sim_start --latency-ms 20 --rate 100 --burst 100
echo "-- Alpaca simulator on $APCA_API_DATA_URL (20 ms latency, 100 requests/s)"
bf migrate

export BACKFILLD_RATE_LIMIT=${BACKFILLD_RATE_LIMIT:-5400}   # 90/s, inside the simulator's 100/s
export BACKFILLD_PROGRESS_INTERVAL_MS=2000 BACKFILLD_METRICS_LISTEN=
echo "-- backfilld run, in the background (rate limit $BACKFILLD_RATE_LIMIT requests/min); its log: $T/demo.log"
daemon_start demo
echo "-- backfilld enqueue --symbols <the 50> --timeframe h1 --from 2024-01-01 --to 2024-12-31 --wait"
start=$(date +%s.%N)
wait_rc=0
bf enqueue --symbols "$SYMBOLS50" --timeframe h1 --from 2024-01-01 --to 2024-12-31 \
    --wait --interval 0.25 || wait_rc=$?
end=$(date +%s.%N)
[ "$wait_rc" -le 1 ] || fail "enqueue --wait exited $wait_rc"
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 60
[ "$DAEMON_RC" -eq 0 ] || fail "backfilld exited $DAEMON_RC"

secs=$(python3 -c "print(f'{$end - $start:.1f}')")
requests=$(sim_counter 'c["requests"]')
read -r ok failed bars < <(sql "SELECT count(*) FILTER (WHERE status = 'succeeded'),
    count(*) FILTER (WHERE status = 'failed'), (SELECT count(*) FROM bars) FROM job_runs" | tr '|' ' ')
echo
echo "== summary =="
printf '  runs succeeded  %s\n  runs failed     %s\n  bars written    %s\n  requests        %s\n  seconds         %s\n  bars/s          %s\n' \
    "$ok" "$failed" "$bars" "$requests" "$secs" "$(python3 -c "print(round($bars / $secs))")"
echo
echo "== backfilld status =="
bf status --limit 5
echo
echo "== sample query: AAPL's last 5 hourly SIP bars of 2024 (New York's year: up to the 19:00 ET bar of Dec 31) =="
psql -X -P pager=off -c "SELECT symbol, timeframe, feed, adjustment, ts, open, high, low, close, volume,
                     trade_count, vwap, final
              FROM bars WHERE symbol = 'AAPL' AND timeframe = 'h1' AND feed = 'sip' AND adjustment = 'raw'
             ORDER BY ts DESC LIMIT 5"
[ "$failed" -eq 0 ] || fail "$failed runs failed"
