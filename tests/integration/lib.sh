# Shared by the integration tests: a private PostgreSQL cluster, the Alpaca
# simulator and the real backfilld binary, all in one temporary directory
# that is removed on exit. On failure every daemon log is printed.
#
# Usage in a test:  . "$(dirname "$0")/lib.sh"; pg_start; sim_start; ...
set -euo pipefail

SRC_DIR=${SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BF_BIN=${BF_BIN:-$SRC_DIR/build/backfilld}
BF_SIM=${BF_SIM:-$SRC_DIR/build/alpaca-sim}
# The schema version migrate reaches: one migration per file in sql/.
SCHEMA_LATEST=$(find "$SRC_DIR/sql" -maxdepth 1 -name '[0-9]*.sql' | wc -l)
PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
TEST_NAME=$(basename "$0" .sh)
T=$(mktemp -d "/tmp/bf-$TEST_NAME.XXXXXX")
chmod 755 "$T"
PIDS=()
CHECKS=0
# Multiplies time budgets (scaled N); the sanitizer build sets 3.
TIME_SCALE=${BF_TIME_SCALE:-1}
# Several daemons may run at once: no metrics listener unless a test asks for one.
export BACKFILLD_METRICS_LISTEN=${BACKFILLD_METRICS_LISTEN-}
# No daily upkeep (calendar, corporate actions, ledger) unless a test asks: it
# would reach for Alpaca's real trading host.
export BACKFILLD_UPKEEP_INTERVAL_MS=${BACKFILLD_UPKEEP_INTERVAL_MS-0}
FAILED=0

log() { printf '[%s] %s\n' "$TEST_NAME" "$*"; }

# scaled N: N times TIME_SCALE, for a time budget in a check.
scaled() { echo $(($1 * TIME_SCALE)); }

# now_ms: wall-clock milliseconds (EPOCHREALTIME, whatever the locale's decimal mark).
now_ms() {
    local us=${EPOCHREALTIME//[.,]/}
    echo $((us / 1000))
}

# forget_pid PID: a process this script has reaped is no longer killed at exit
# (its PID may belong to someone else by then).
forget_pid() {
    local p keep=()
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && [ "$p" != "$1" ] && keep+=("$p")
    done
    PIDS=("${keep[@]:-}")
}

dump_logs() {
    for f in "$T"/*.log "$T"/pg*/postgres.log; do
        [ -e "$f" ] || continue
        echo "----- $(basename "$f") (last 80 lines) -----"
        tail -n 80 "$f"
    done
}

# is_ours PID: PID is this shell's child or grandchild.
is_ours() {
    local p=$1 i
    for i in 1 2; do
        p=$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')
        [ -n "$p" ] || return 1
        [ "$p" = "$$" ] && return 0
    done
    return 1
}

cleanup() {
    local rc=$?
    # Only what is still ours (a child, or a child's child such as runuser's):
    # a PID reaped earlier may belong to another process by now. All are
    # picked before any is killed, while the children still have their parents.
    local victims=()
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && is_ours "$p" && victims+=("$p")
    done
    for p in "${victims[@]:-}"; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
    done
    disown -a 2>/dev/null || true   # no "Killed" job notices for what we stop here
    local d
    for d in "$T"/pg*/data; do   # the test's cluster, and a standby if it made one
        [ -d "$d" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
    done
    if [ "$rc" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
        echo "[$TEST_NAME] FAILED (exit $rc); logs follow"
        dump_logs
        [ "$rc" -eq 0 ] && rc=1
    fi
    if [ -z "${KEEP_TMP:-}" ]; then rm -rf "$T"; else echo "kept $T"; fi
    exit "$rc"
}
trap cleanup EXIT

fail() {
    echo "[$TEST_NAME] FAIL: $*" >&2
    FAILED=1
    exit 1
}

# check DESCRIPTION EXPECTED ACTUAL
check() {
    CHECKS=$((CHECKS + 1))
    if [ "$2" != "$3" ]; then
        fail "$1: expected '$2', got '$3'"
    fi
    log "ok $CHECKS - $1"
}

# check_cmd DESCRIPTION command...   (passes when the command succeeds)
check_cmd() {
    local d=$1
    shift
    CHECKS=$((CHECKS + 1))
    if ! "$@"; then
        fail "$d"
    fi
    log "ok $CHECKS - $d"
}

# wait_for DESCRIPTION TIMEOUT_S command...   (polls every 0.1 s; TIMEOUT_S is scaled)
wait_for() {
    local d=$1 t=$(($2 * TIME_SCALE))
    shift 2
    local deadline=$(($(now_ms) + t * 1000))
    until "$@" >/dev/null 2>&1; do
        if [ "$(now_ms)" -ge "$deadline" ]; then
            fail "timed out after ${t}s waiting for: $d"
        fi
        sleep 0.1
    done
}

# count_ge FILE PATTERN N: FILE has at least N lines matching PATTERN (for wait_for).
count_ge() {
    [ "$(grep -c -- "$2" "$1" 2>/dev/null || true)" -ge "$3" ]
}

finish() {
    echo "$CHECKS passed, 0 failed"
}

# --- terminals and systemd ---------------------------------------------------

# tmux_start: a tmux server of the test's own, on a socket in $T (run it as
# "${TM[@]}" …), stopped at exit before the usual cleanup.
tmux_start() {
    command -v tmux >/dev/null || fail "tmux is not installed (tools/deps.sh installs it)"
    TM=(tmux -S "$T/tmux.sock")
    trap 'tmux_down $?' EXIT
}
tmux_down() {
    local rc=$1
    "${TM[@]}" kill-server >/dev/null 2>&1 || true
    set +e
    (exit "$rc") # cleanup reads the test's exit status from $?
    cleanup
}

# notify_start NAME: a datagram socket $T/NAME.sock standing in for systemd's
# NOTIFY_SOCKET; every message lands as one line (newlines as '|') in $T/NAME.notify.
notify_start() {
    local sock=$T/$1.sock out=$T/$1.notify
    rm -f "$sock"
    : >"$out"
    python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a") as f:
    while True:
        d = s.recv(65536).decode("utf-8", "replace")
        f.write(d.replace("\n", "|") + "\n")
        f.flush()
' "$sock" "$out" &
    PIDS+=($!)
    wait_for "notify socket $1" 10 test -S "$sock"
}

# --- PostgreSQL -------------------------------------------------------------

# free_port: a TCP port on 127.0.0.1 that nothing listens on now. Another
# process could take it before the caller binds it, so callers that start a
# server on it retry with a new one if the start fails (see pg_start).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_start() {
    mkdir -p "$T/pg"
    chown postgres: "$T/pg"
    runuser -u postgres -- "$PGBIN/initdb" -D "$T/pg/data" -U postgres --auth=trust -N \
        -E UTF8 --locale=C >"$T/initdb.out" 2>&1 || { cat "$T/initdb.out"; fail "initdb"; }
    cat >>"$T/pg/data/postgresql.conf" <<CONF
listen_addresses = '${PG_LISTEN:-}'
port = ${PG_PORT:-5432}
unix_socket_directories = '$T/pg'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 128MB
log_min_messages = warning
CONF
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -l "$T/pg/postgres.log" -w -t 60 start \
        >/dev/null || fail "pg_ctl start"
    export PGHOST="$T/pg" PGPORT="${PG_PORT:-5432}" PGUSER=postgres
    "$PGBIN/createdb" backfilld
    export PGDATABASE=backfilld
    export BACKFILLD_DATABASE_URL="host=$T/pg port=${PG_PORT:-5432} user=postgres dbname=backfilld"
}

# pg_start_tcp: pg_start listening on 127.0.0.1 too, on a free port (PG_TCP_PORT).
# A port taken between free_port and the bind makes the start fail: another is tried.
pg_start_tcp() {
    local try
    for try in 1 2 3; do
        PG_TCP_PORT=$(free_port)
        if (PG_LISTEN=127.0.0.1 PG_PORT=$PG_TCP_PORT pg_start) >"$T/pgstart.out" 2>&1; then break; fi
        rm -rf "$T/pg"
        [ "$try" -lt 3 ] || { cat "$T/pgstart.out"; fail "postgres did not start on TCP"; }
    done
    export PGHOST="$T/pg" PGPORT=$PG_TCP_PORT PGUSER=postgres PGDATABASE=backfilld
}

# slow_scheduler CALL SECONDS: schedule_due_jobs() sleeps SECONDS on its CALLth call
# (counted by a sequence, which the sleeping call's rollback does not undo).
slow_scheduler() {
    sql "CREATE SEQUENCE slow_scheduler_calls;
         ALTER FUNCTION schedule_due_jobs(integer, interval, interval) RENAME TO schedule_due_jobs_real;
         CREATE FUNCTION schedule_due_jobs(p integer DEFAULT 5, s interval DEFAULT '60 s',
                                           l interval DEFAULT '15 min')
         RETURNS integer LANGUAGE plpgsql AS \$\$
         BEGIN
             IF nextval('slow_scheduler_calls') = $1 THEN PERFORM pg_sleep($2); END IF;
             RETURN schedule_due_jobs_real(p, s, l);
         END \$\$"
}

pg_stop() {
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -m fast -w stop >/dev/null
}

pg_restart_only() {
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -l "$T/pg/postgres.log" -w -t 60 start \
        >/dev/null
}

# sql "SELECT ..."  → unaligned, tuples only
sql() {
    psql -XAtq -v ON_ERROR_STOP=1 -c "$1"
}

# For wait_for, which re-runs its command on every poll (a $(...) argument would
# be evaluated only once): sql_ge "SELECT n" N, sql_eq "SELECT x" VALUE.
sql_ge() {
    [ "$(sql "$1")" -ge "$2" ]
}
sql_eq() {
    [ "$(sql "$1")" = "$2" ]
}

# --- the simulator ----------------------------------------------------------

sim_start() {
    rm -f "$T/sim.port"
    "$BF_SIM" --port 0 --port-file "$T/sim.port" "$@" >"$T/sim.out" 2>"$T/sim.log" &
    PIDS+=($!)
    SIM_PID=$!
    wait_for "simulator port file" 15 test -s "$T/sim.port"
    SIM_PORT=$(cat "$T/sim.port")
    export APCA_API_DATA_URL="http://127.0.0.1:$SIM_PORT"
    export APCA_API_KEY_ID=${APCA_API_KEY_ID:-test-key}
    export APCA_API_SECRET_KEY=${APCA_API_SECRET_KEY:-test-secret}
}

sim_stop() {
    kill "$SIM_PID" 2>/dev/null || true
    wait "$SIM_PID" 2>/dev/null || true
    forget_pid "$SIM_PID"
}

sim_get() {
    curl -s --max-time 10 "http://127.0.0.1:$SIM_PORT$1"
}

# sim_counter PYTHON_EXPR   e.g. sim_counter 'c["requests"]'
sim_counter() {
    sim_get /__sim/counters | python3 -c "import json,sys; c=json.load(sys.stdin); print($1)"
}

# --- the daemon -------------------------------------------------------------

bf() {
    "$BF_BIN" "$@"
}

# daemon_start NAME [run args...]  → sets DAEMON_PID; log in $T/NAME.log
daemon_start() {
    local name=$1
    shift
    "$BF_BIN" run "$@" 2>>"$T/$name.log" &
    DAEMON_PID=$!
    PIDS+=($DAEMON_PID)
}

# daemon_wait PID TIMEOUT_S → sets DAEMON_RC to the exit code (fails the test on timeout).
# Not in $(...): only this shell can wait for its own children.
# TIMEOUT_S is not scaled: these budgets are many times what a run takes already.
daemon_wait() {
    local pid=$1 t=$2
    local deadline=$(($(now_ms) + t * 1000))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(now_ms)" -ge "$deadline" ]; then
            fail "daemon $pid still running after ${t}s"
        fi
        sleep 0.1
    done
    DAEMON_RC=0
    wait "$pid" || DAEMON_RC=$?
    forget_pid "$pid"
}

# metrics_port LOG: the port of the first "metrics listening" line in a daemon's log
# (for BACKFILLD_METRICS_LISTEN=…:0). One awk reading the file: no pipe to cut short.
metrics_port() {
    awk '/"msg":"metrics listening"/ { if (match($0, /"port":[0-9]+/)) { print substr($0, RSTART + 7, RLENGTH - 7); exit } }' "$1"
}

# Loads `alpaca-sim dump` output for the given args into table expected_bars
# (TIMEFRAME_CODE is ours, e.g. h1) and compares it with bars, both ways.
# ny DATE: New York midnight at the start of DATE, as RFC 3339 UTC; ny_end DATE: the
# last second of that New York day. A bare date given to backfilld is that New York
# trading day, so a simulator dump of the same bars spans [ny FROM, ny_end TO].
ny() {
    date -u -d "@$(TZ=America/New_York date -d "$1 00:00" +%s)" +%Y-%m-%dT%H:%M:%SZ
}
ny_end() {
    local next
    next=$(date -u -d "$1 +1 day" +%Y-%m-%d)
    date -u -d "@$(($(TZ=America/New_York date -d "$next 00:00" +%s) - 1))" +%Y-%m-%dT%H:%M:%SZ
}

load_expected() {
    local tf_code=$1
    shift
    "$BF_SIM" dump "$@" >"$T/expected.csv"
    sql "DROP TABLE IF EXISTS expected_bars;
         CREATE TABLE expected_bars (symbol text, ts timestamptz, open float8, high float8,
           low float8, close float8, volume bigint, trade_count bigint, vwap float8,
           timeframe text DEFAULT '$tf_code');"
    psql -XAtq -v ON_ERROR_STOP=1 -c "\\copy expected_bars (symbol, ts, open, high, low, close, volume, trade_count, vwap) FROM '$T/expected.csv' CSV"
}

# Rows in one table and not the other, both directions (0 means equal).
bars_diff() {
    sql "SELECT (SELECT count(*) FROM (
            SELECT symbol, timeframe, ts, open, high, low, close, volume, trade_count, vwap FROM expected_bars
            EXCEPT SELECT symbol, timeframe, ts, open, high, low, close, volume, trade_count, vwap FROM bars) a)
          + (SELECT count(*) FROM (
            SELECT symbol, timeframe, ts, open, high, low, close, volume, trade_count, vwap FROM bars
            EXCEPT SELECT symbol, timeframe, ts, open, high, low, close, volume, trade_count, vwap FROM expected_bars) b)"
}

# check_bars_exact [LABEL]: bars holds exactly expected_bars (count, and every value both ways).
check_bars_exact() {
    local l=${1:+$1: }
    check "${l}bar count equals the simulator's" "$(sql "SELECT count(*) FROM expected_bars")" \
        "$(sql "SELECT count(*) FROM bars")"
    check "${l}every value equals the simulator's" "0" "$(bars_diff)"
}

SYMBOLS50="AAPL,ABBV,ABT,ACN,ADBE,AMD,AMGN,AMZN,AVGO,BAC,BRK.B,CMCSA,COST,CRM,CSCO,CVX,DIS,GE,GOOGL,HD,IBM,INTC,JNJ,JPM,KO,LIN,LLY,MA,MCD,META,MRK,MSFT,NFLX,NKE,NVDA,ORCL,PEP,PFE,PG,QCOM,T,TMO,TSLA,TXN,UNH,V,VZ,WFC,WMT,XOM"
