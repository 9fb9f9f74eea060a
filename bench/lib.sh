# Shared by the benchmarks: the test harness (private Postgres, simulator,
# daemon helpers; tests/integration/lib.sh), a shorter log dump on failure,
# and a snapshot of the binaries.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export SRC_DIR=${SRC_DIR:-$(cd "$BENCH_DIR/.." && pwd)}
. "$SRC_DIR/tests/integration/lib.sh"

# lib.sh prints the last 80 lines of every log when the script fails; for a
# benchmark the table is the result, so keep the tail short.
dump_logs() {
    local f
    for f in "$T"/*.log "$T"/pg/postgres.log; do
        [ -s "$f" ] || continue
        echo "----- $(basename "$f") (last 5 lines; KEEP_TMP=1 keeps the whole file) -----"
        tail -n 5 "$f"
    done
}

# Snapshot the binaries: a rebuild in the source tree during the benchmark
# must not swap (or break) the daemon between rounds. Sets BF_BUILT.
snapshot_binaries() {
    mkdir -p "$T/bin"
    cp "$BF_BIN" "$T/bin/backfilld" && cp "$BF_SIM" "$T/bin/alpaca-sim"
    BF_BUILT=$(date -r "$BF_BIN" '+%F %T')
    BF_BIN=$T/bin/backfilld
    BF_SIM=$T/bin/alpaca-sim
}

# Ends a round that ran past its deadline: SIGTERM, up to 5 s, then SIGKILL.
terminate() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}

now_s() { date +%s.%N; }

# bench_symbols N FILE: N valid symbols with data, S000A, S001A, ... (S0000A...
# above 1000), one a line. Not ZZ..., which the simulator serves empty.
bench_symbols() {
    local fmt=S%03dA i
    [ "$1" -gt 1000 ] && fmt=S%04dA
    for ((i = 0; i < $1; i++)); do printf "$fmt\n" "$i"; done >"$2"
}

# wait_deadline PID TIMEOUT_S [SAMPLE_CMD...]: waits for PID (a child), running
# SAMPLE_CMD on every tick (WAIT_TICK seconds, default 0.1); past TIMEOUT_S it is
# terminated. Sets TIMED_OUT (0 or 1) and WAIT_RC (its exit status).
wait_deadline() {
    local pid=$1 deadline=$((SECONDS + $2))
    shift 2
    TIMED_OUT=0
    while kill -0 "$pid" 2>/dev/null; do
        [ $# -eq 0 ] || "$@" || true
        if [ "$SECONDS" -ge "$deadline" ]; then
            TIMED_OUT=1
            terminate "$pid"
            break
        fi
        sleep "${WAIT_TICK:-0.1}"
    done
    WAIT_RC=0
    wait "$pid" 2>/dev/null || WAIT_RC=$?
}

# print_statuses: the runs by status, with the last error, on stderr (a round that failed).
print_statuses() {
    psql -X -v ON_ERROR_STOP=1 -c "SELECT status, count(*), max(attempt) AS max_attempt,
            left(max(last_error), 120) AS a_last_error
          FROM job_runs GROUP BY status ORDER BY status" >&2
}

# proc_cpu_s PID [all]: CPU seconds (user+sys) of a live process, plus those of
# its reaped children when $2 = all; empty when PID is gone.
proc_cpu_s() {
    local f
    f=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || { echo ""; return; }
    # after "comm) ": state is $1, utime $12, stime $13, cutime $14, cstime $15
    awk -v all="${2:-}" -v hz="$(getconf CLK_TCK)" '{
        t = $12 + $13; if (all == "all") t += $14 + $15; printf "%.2f", t / hz }' <<<"$f"
}

# pg_cpu_s: CPU seconds used so far by the test's cluster: the postmaster with
# the backends it has reaped, plus every process it still has (background
# workers, open backends). Waits up to 5 s for client backends of the
# backfilld database to exit first, so that theirs are counted as reaped.
pg_cpu_s() {
    local pm c kids t=0 i
    pm=$(head -1 "$T/pg/data/postmaster.pid")
    for i in $(seq 50); do
        kids=$(ps -o pid= --ppid "$pm" | tr -d ' ')
        c=0
        for k in $kids; do grep -qa ' backfilld ' "/proc/$k/cmdline" 2>/dev/null && c=$((c + 1)); done
        [ "$c" -eq 0 ] && break
        sleep 0.1
    done
    t=$(proc_cpu_s "$pm" all)
    for k in $(ps -o pid= --ppid "$pm"); do
        c=$(proc_cpu_s "$k" all)
        [ -n "$c" ] && t=$(awk -v a="$t" -v b="$c" 'BEGIN { printf "%.2f", a + b }')
    done
    echo "$t"
}

# pg_enable_stat_statements: restarts the cluster with pg_stat_statements
# loaded (contrib of postgresql-15) and creates the extension in backfilld.
pg_enable_stat_statements() {
    cat >>"$T/pg/data/postgresql.conf" <<CONF
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = 'all'
pg_stat_statements.max = 1000
CONF
    pg_stop
    pg_restart_only
    sql "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
}

# host_busy_s: CPU seconds all processes on this host have used so far (every
# core; /proc/stat user+nice+system+irq+softirq+steal), to tell a saturated
# machine from an idle wait.
host_busy_s() {
    awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit }' /proc/stat
}

# --- exactness against the simulator (schema 6) ------------------------------
# A bare date given to `backfilld enqueue` is the America/New_York trading day:
# --from F --to T covers [ny F, ny_end T] (tests/integration/lib.sh), so the
# simulator's dump of the same bars must span exactly that, not UTC days.

# bench_dump OUT API_TF SYMLIST FROM_DATE TO_DATE: `alpaca-sim dump` (CSV
# SYMBOL,t,o,h,l,c,v,n,vw) of the bars `enqueue --from FROM_DATE --to TO_DATE`
# asks for, SIP, raw (the daemon's defaults).
bench_dump() {
    "$BF_SIM" dump --symbols "$3" --timeframe "$2" --start "$(ny "$4")" --end "$(ny_end "$5")" >"$1"
}

# bench_load_expected CSV TF_CODE: (re)creates table expected_bars from a dump.
bench_load_expected() {
    sql "SET client_min_messages = warning; DROP TABLE IF EXISTS expected_bars;
         CREATE TABLE expected_bars (symbol text, ts timestamptz, open float8, high float8,
           low float8, close float8, volume bigint, trade_count bigint, vwap float8,
           timeframe text DEFAULT '$2')" >/dev/null
    psql -XAtq -v ON_ERROR_STOP=1 -c "\\copy expected_bars (symbol, ts, open, high, low, close, volume, trade_count, vwap) FROM '$1' CSV"
}

# bench_bars_diff [TABLE] [WHERE]: "missing extra off_series" for the rows of
# TABLE (default bars) matching WHERE against expected_bars: rows of the dump
# not stored, stored rows not in the dump (every column the simulator serves
# compared, both ways), and, for the real bars table, stored rows that are not
# the series the simulator dumped (feed sip, adjustment raw) or not final or
# without fetched_at. "0 0 0" is exact.
BENCH_DIFF_COLS="symbol, timeframe, ts, open, high, low, close, volume, trade_count, vwap"
bench_bars_diff() {
    local t=${1:-bars} w=${2:-true} c=$BENCH_DIFF_COLS off="0"
    [ "$t" = bars ] &&
        off="(SELECT count(*) FROM bars WHERE ($w) AND ((feed, adjustment, final) IS DISTINCT FROM ('sip', 'raw', true) OR fetched_at IS NULL))"
    sql "SELECT (SELECT count(*) FROM (SELECT $c FROM expected_bars EXCEPT ALL SELECT $c FROM $t WHERE $w) a)
         || ' ' || (SELECT count(*) FROM (SELECT $c FROM $t WHERE $w EXCEPT ALL SELECT $c FROM expected_bars) b)
         || ' ' || $off"
}
