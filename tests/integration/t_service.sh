#!/usr/bin/env bash
# The systemd protocol and the signals, without systemd:
#  - sd_notify: no READY=1 while the database is down at start; READY=1 once it
#    is up, and only after the "ready" log line; SIGHUP sends RELOADING=1 with
#    MONOTONIC_USEC, then READY=1; SIGTERM sends STOPPING=1 and exits 0;
#    WATCHDOG=1 every WATCHDOG_USEC/2, and none when WATCHDOG_PID names another
#    process;
#  - SIGHUP re-reads the --config file: the log level and the rate limit change
#    (the log and /metrics show it), a restart-only key is reported and ignored;
#  - SIGTERM during a backfill: exit 0 soon after the grace period, every
#    unfinished run released without spending an attempt, nothing lost; a
#    second SIGTERM during the grace period exits at once; a restart finishes
#    everything with exact data.
. "$(dirname "$0")/lib.sh"

# notify_start NAME: a datagram receiver on $T/NAME.sock; each datagram becomes
# one line of $T/NAME.notify, its newlines replaced by '|'.

# daemon_start_cfg NAME CONFIG_FILE [run args...]: like daemon_start, with --config.
daemon_start_cfg() {
    local name=$1 cfg=$2
    shift 2
    "$BF_BIN" --config "$cfg" run "$@" 2>>"$T/$name.log" &
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
}

# line_no FILE PATTERN [NTH]: the line number of the NTH (default 1) line matching
# the extended regex PATTERN, or 0.
line_no() {
    local n
    n=$(grep -nE -- "$2" "$1" | sed -n "${3:-1}p" | cut -d: -f1)
    echo "${n:-0}"
}

# none_for FILE PATTERN SECONDS: FILE has no line matching PATTERN, polled for SECONDS.
none_for() {
    local end=$(($(now_ms) + $3 * 1000))
    while [ "$(now_ms)" -lt "$end" ]; do
        if grep -qE -- "$2" "$1"; then
            return 1
        fi
        sleep 0.1
    done
    ! grep -qE -- "$2" "$1"
}

alive() { kill -0 "$1" 2>/dev/null; }

pg_start
sim_start
bf migrate >/dev/null
export BACKFILLD_RATE_LIMIT=600000

# --- sd_notify: READY only once the database is there ------------------------------------
pg_stop
notify_start n1
printf 'BACKFILLD_PROGRESS_INTERVAL_MS=5000\n' >"$T/n1.conf"
NOTIFY_SOCKET=$T/n1.sock daemon_start_cfg n1 "$T/n1.conf"
N1=$DAEMON_PID
wait_for "db connect failed logged" 10 grep -q '"msg":"db connect failed"' "$T/n1.log"
check_cmd "the log shows the failed connect" grep -q '"msg":"db connect failed"' "$T/n1.log"
check_cmd "no READY=1 for 2 s while the database is down" none_for "$T/n1.notify" 'READY=1' 2
check_cmd "the daemon keeps running while the database is down" alive "$N1"
pg_restart_only
wait_for "READY=1 after the database came up" 30 grep -q 'READY=1' "$T/n1.notify"
check_cmd "the log said ready before READY=1 arrived" grep -q '"msg":"ready"' "$T/n1.log"
check "the first datagram with READY=1 also carries a STATUS" "1" \
    "$(grep -c '^READY=1|STATUS=' "$T/n1.notify" || true)"

# SIGHUP after a reloadable change: RELOADING=1 + MONOTONIC_USEC, then READY=1.
printf 'BACKFILLD_PROGRESS_INTERVAL_MS=1000\n' >"$T/n1.conf"
kill -HUP "$N1"
wait_for "RELOADING=1" 10 grep -q 'RELOADING=1' "$T/n1.notify"
wait_for "READY=1 after the reload" 10 count_ge "$T/n1.notify" 'READY=1' 2
rl=$(grep -m1 'RELOADING=1' "$T/n1.notify")
check_cmd "RELOADING=1 carries MONOTONIC_USEC=<digits> ($rl)" \
    grep -qxE 'RELOADING=1\|MONOTONIC_USEC=[0-9]+' <<<"$rl"
usec=${rl##*MONOTONIC_USEC=}
# CLOCK_MONOTONIC, as systemd wants: within a minute of ours.
check_cmd "MONOTONIC_USEC is CLOCK_MONOTONIC" python3 -c '
import sys, time
sys.exit(0 if abs(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6 - int(sys.argv[1])) < 60e6 else 1)' "$usec"
r_line=$(line_no "$T/n1.notify" 'RELOADING=1')
ready2=$(line_no "$T/n1.notify" 'READY=1' 2)
check_cmd "READY=1 comes after RELOADING=1 (lines $r_line < $ready2)" test "$r_line" -lt "$ready2"
check_cmd "the reload was applied" grep -q '"msg":"setting reloaded","key":"BACKFILLD_PROGRESS_INTERVAL_MS"' "$T/n1.log"

kill -TERM "$N1"
wait_for "STOPPING=1" 10 grep -q 'STOPPING=1' "$T/n1.notify"
daemon_wait "$N1" 15
check "exit code after SIGTERM" "0" "$DAEMON_RC"
check_cmd "STOPPING=1 comes after the reload's READY=1" \
    test "$(line_no "$T/n1.notify" 'STOPPING=1')" -gt "$ready2"

# --- the watchdog ------------------------------------------------------------------------
notify_start wd1
WATCHDOG_USEC=400000 NOTIFY_SOCKET=$T/wd1.sock daemon_start wd1
t0=$(now_ms)
wait_for "3 WATCHDOG=1" 5 count_ge "$T/wd1.notify" '^WATCHDOG=1$' 3
el=$(($(now_ms) - t0))
check_cmd "3 WATCHDOG=1 within ~2 s of the start (took ${el} ms)" test "$el" -le "$(scaled 2500)"
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 15
check "watchdog daemon exit code" "0" "$DAEMON_RC"

# WATCHDOG_PID naming another process: the pings are not ours to send.
notify_start wd2
WATCHDOG_USEC=400000 WATCHDOG_PID=$$ NOTIFY_SOCKET=$T/wd2.sock daemon_start wd2
wait_for "READY=1 (wd2)" 15 grep -q 'READY=1' "$T/wd2.notify"
check_cmd "no WATCHDOG=1 for 2 s when WATCHDOG_PID is another pid" none_for "$T/wd2.notify" 'WATCHDOG=1' 2
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 15
# ...and WATCHDOG_PID naming the daemon itself: pings again (the control).
notify_start wd3
WATCHDOG_USEC=400000 NOTIFY_SOCKET=$T/wd3.sock \
    bash -c 'export WATCHDOG_PID=$$; exec "$0" run' "$BF_BIN" 2>>"$T/wd3.log" &
DAEMON_PID=$!
PIDS+=("$DAEMON_PID")
wait_for "3 WATCHDOG=1 with WATCHDOG_PID = own pid" 5 count_ge "$T/wd3.notify" '^WATCHDOG=1$' 3
check_cmd "WATCHDOG=1 again when WATCHDOG_PID is the daemon's own pid" count_ge "$T/wd3.notify" '^WATCHDOG=1$' 3
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 15

# --- SIGHUP: log level and rate limit from the --config file ----------------------------
unset BACKFILLD_RATE_LIMIT # the environment outranks the file
printf 'BACKFILLD_LOG_LEVEL=info\nBACKFILLD_RATE_LIMIT=600\n' >"$T/rl.conf"
BACKFILLD_METRICS_LISTEN=127.0.0.1:0 daemon_start_cfg rl "$T/rl.conf"
RL=$DAEMON_PID
wait_for "rl ready" 15 grep -q '"msg":"ready"' "$T/rl.log"
PORT=$(metrics_port "$T/rl.log")
check_cmd "metrics port logged ($PORT)" test -n "$PORT"
check "rate limit before the reload" "backfilld_rate_limit_per_minute 600" \
    "$(curl -sf "http://127.0.0.1:$PORT/metrics" | grep '^backfilld_rate_limit_per_minute ')"
bf enqueue --symbols AAPL --timeframe d1 --from 2024-01-01 --to 2024-03-31 >/dev/null
wait_for "first run succeeded" 20 sql_eq "SELECT count(*) FROM job_runs WHERE status = 'succeeded'" 1
check "no debug lines at level info" "0" "$(grep -c '"level":"debug"' "$T/rl.log" || true)"

printf 'BACKFILLD_LOG_LEVEL=debug\nBACKFILLD_RATE_LIMIT=1200\nBACKFILLD_MAX_CONNECTIONS=3\n' >"$T/rl.conf"
kill -HUP "$RL"
wait_for "reload done" 10 grep -q '"msg":"configuration reloaded","applied":2,"ignored":1' "$T/rl.log"
check "settings reloaded" "BACKFILLD_LOG_LEVEL,BACKFILLD_RATE_LIMIT" \
    "$(grep -o '"msg":"setting reloaded","key":"[A-Z_]*"' "$T/rl.log" | sed 's/.*"key":"//; s/"$//' | sort | paste -sd,)"
check "settings ignored until a restart" "BACKFILLD_MAX_CONNECTIONS" \
    "$(grep -o '"msg":"setting changed but needs a restart; ignored","key":"[A-Z_]*"' "$T/rl.log" |
        sed 's/.*"key":"//; s/"$//' | sort | paste -sd,)"
bf enqueue --symbols MSFT --timeframe d1 --from 2024-01-01 --to 2024-03-31 >/dev/null
wait_for "debug 'page fetched' lines" 20 grep -q '"level":"debug","msg":"page fetched"' "$T/rl.log"
check "rate limit after the reload" "backfilld_rate_limit_per_minute 1200" \
    "$(curl -sf "http://127.0.0.1:$PORT/metrics" | grep '^backfilld_rate_limit_per_minute ')"
check_cmd "the daemon survived the reload" alive "$RL"
kill -TERM "$RL"
daemon_wait "$RL" 15
check "reloaded daemon exit code" "0" "$DAEMON_RC"

# --- SIGTERM during a backfill -------------------------------------------------------------
export BACKFILLD_RATE_LIMIT=600000
sql "SET client_min_messages = warning; TRUNCATE bars, job_runs, job_definitions CASCADE"
sim_get '/__sim/set?latency_ms=300' >/dev/null
SYMS="AAPL,AMZN,GOOGL,META,MSFT,NVDA,TSLA,JPM,V,XOM"
bf enqueue --symbols "$SYMS" --timeframe h1 --from 2024-01-01 --to 2024-12-31 >/dev/null
TOTAL=$(sql "SELECT count(*) FROM job_runs")
check_cmd "a backfill of many runs is queued ($TOTAL)" test "$TOTAL" -ge 100

BACKFILLD_PAGE_LIMIT=50 BACKFILLD_SHUTDOWN_TIMEOUT_MS=500 BACKFILLD_CONCURRENCY=8 daemon_start g1
G1=$DAEMON_PID
wait_for "a run succeeded" 30 sql_ge "SELECT count(*) FROM job_runs WHERE status = 'succeeded'" 1
# A run takes ~7 pages x 300 ms: one claimed under a second ago cannot finish
# within the 500 ms grace period, so it must be released.
wait_for "a freshly claimed run in flight" 20 sql_ge "SELECT count(*) FROM job_runs
    WHERE status = 'running' AND started_at > now() - interval '1 second'" 1
# Slow every answer right before the signal, so whatever is still fetching then
# cannot finish inside the grace period on a slow machine either.
sim_get '/__sim/set?latency_ms=5000' >/dev/null
t0=$(now_ms)
kill -TERM "$G1"
daemon_wait "$G1" 20
el=$(($(now_ms) - t0))
sim_get '/__sim/set?latency_ms=300' >/dev/null
check "graceful stop exit code" "0" "$DAEMON_RC"
check_cmd "graceful stop within 15 s (took ${el} ms)" test "$el" -le 15000
check "no run left running" "0" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'running'")"
check "every run is queued or succeeded, none lost" "$TOTAL" \
    "$(sql "SELECT count(*) FROM job_runs WHERE status IN ('queued', 'succeeded')")"
check "released runs did not spend an attempt" "0" \
    "$(sql "SELECT count(*) FROM job_runs WHERE status = 'queued' AND attempt <> 0")"
check "no error was recorded on any run" "0" \
    "$(sql "SELECT count(*) FROM job_runs WHERE errors <> '[]' OR last_error IS NOT NULL")"
check_cmd "the release is logged" grep -Eq '"msg":"runs? released at shutdown"' "$T/g1.log"
released=$(grep -c '"msg":"run released at shutdown"' "$T/g1.log" || true)
check_cmd "some runs were in flight and released ($released)" test "$released" -ge 1
queued=$(sql "SELECT count(*) FROM job_runs WHERE status = 'queued'")

# A second SIGTERM during a long grace period: out at once.
BACKFILLD_PAGE_LIMIT=50 BACKFILLD_SHUTDOWN_TIMEOUT_MS=60000 BACKFILLD_LEASE_SECONDS=3 \
    BACKFILLD_CONCURRENCY=8 daemon_start g2
G2=$DAEMON_PID
wait_for "g2 runs in flight" 20 sql_ge "SELECT count(*) FROM job_runs WHERE status = 'running'" 2
kill -TERM "$G2"
wait_for "g2 stopping" 5 grep -q '"msg":"stopping"' "$T/g2.log"
t0=$(now_ms)
kill -TERM "$G2"
daemon_wait "$G2" 20
el=$(($(now_ms) - t0))
check_cmd "a second SIGTERM exits within 3 s (took ${el} ms)" test "$el" -le "$(scaled 3000)"
check "second-SIGTERM exit code" "0" "$DAEMON_RC"
check_cmd "the second signal is logged" grep -q '"msg":"second signal: exiting at once' "$T/g2.log"

# A restart finishes everything (g2's leases expire and are rescued).
sim_get '/__sim/set?latency_ms=0' >/dev/null
BACKFILLD_LEASE_SECONDS=3 BACKFILLD_RESCUE_INTERVAL_MS=300 BACKFILLD_RUN_RETRY_BASE_MS=100 \
    BACKFILLD_CONCURRENCY=16 daemon_start g3 --until-idle
daemon_wait "$DAEMON_PID" 60
check "restarted daemon exit code" "0" "$DAEMON_RC"
check "every run succeeded" "$TOTAL" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
load_expected h1 --symbols "$SYMS" --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-12-31)"
check_bars_exact
log "graceful stop left $queued runs queued; $released released"
finish
