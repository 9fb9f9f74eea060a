#!/usr/bin/env bash
# Through PgBouncer in transaction mode: each transaction may land on another
# server connection and NOTIFY does not come through, so the daemon runs with
# BACKFILLD_POLL_ONLY=true. A 600-run backfill must finish with exact data,
# and PgBouncer's own statistics must show the traffic went through it.
. "$(dirname "$0")/lib.sh"

PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}
[ -x "$PGBOUNCER" ] || fail "$PGBOUNCER not installed (tools/deps.sh installs pgbouncer)"

pg_start
sim_start
bf migrate >/dev/null   # directly, not through the pooler

# --- PgBouncer: unix socket only, trust, transaction pooling -------------------
mkdir -p "$T/pgb"
cat >"$T/pgb/pgbouncer.ini" <<INI
[databases]
backfilld = host=$T/pg port=${PG_PORT:-5432} dbname=backfilld user=postgres

[pgbouncer]
listen_addr =
listen_port = 6432
unix_socket_dir = $T/pgb
auth_type = trust
auth_file = $T/pgb/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 4
max_client_conn = 100
ignore_startup_parameters = extra_float_digits
pidfile = $T/pgb/pgbouncer.pid
logfile = $T/pgb/pgbouncer.log
stats_period = 1
INI
echo '"postgres" ""' >"$T/pgb/userlist.txt"
chown -R postgres: "$T/pgb"
ln -s "$T/pgb/pgbouncer.log" "$T/pgbouncer.log"   # $T is root's; the link puts it in the failure dump
# It refuses to run as root; in the foreground, as postgres.
runuser -u postgres -- "$PGBOUNCER" "$T/pgb/pgbouncer.ini" >"$T/pgbouncer-stderr.log" 2>&1 &
PIDS+=($!)
PGB="host=$T/pgb port=6432 dbname=backfilld user=postgres"
PGB_ADMIN="host=$T/pgb port=6432 dbname=pgbouncer user=postgres"
wait_for "pgbouncer answers" 15 psql -XAtq "$PGB" -c 'select 1'
PIDS+=("$(cat "$T/pgb/pgbouncer.pid")")   # runuser's child: stop it too on exit

# pgb_stat COLUMN → that column of SHOW STATS for database backfilld
pgb_stat() {
    psql -XA -F'|' "$PGB_ADMIN" -c 'SHOW STATS' | python3 -c "
import sys
rows = [l.rstrip('\n').split('|') for l in sys.stdin if '|' in l]
h = rows[0]
print(next(r[h.index('$1')] for r in rows[1:] if r[h.index('database')] == 'backfilld'))"
}
# pgb_clients APP → client connections PgBouncer has from that application_name
pgb_clients() {
    psql -XA -F'|' "$PGB_ADMIN" -c 'SHOW CLIENTS' | python3 -c "
import sys
rows = [l.rstrip('\n').split('|') for l in sys.stdin if '|' in l]
h = rows[0]
print(sum(1 for r in rows[1:] if r[h.index('database')] == 'backfilld' and r[h.index('application_name')] == '$1'))"
}
pgb_clients_ge() {
    [ "$(pgb_clients "$1")" -ge "$2" ]
}

# --- enqueue through the pooler ----------------------------------------------------
BACKFILLD_DATABASE_URL="$PGB" bf enqueue --symbols "$SYMBOLS50" --timeframe h1 \
    --from 2024-01-01 --to 2024-12-31 >/dev/null
check "600 runs queued through the pooler" "600" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'queued'")"
xact0=$(pgb_stat total_xact_count)

# --- the daemon through the pooler, poll-only ------------------------------------------
# Claims of 50 (the default takes all 600 in one): many claims and writes through the pooler.
export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_RUN_RETRY_BASE_MS=100 BACKFILLD_CLAIM_BATCH=50
t0=$SECONDS
BACKFILLD_DATABASE_URL="$PGB" BACKFILLD_POLL_ONLY=true BACKFILLD_POLL_INTERVAL_MS=200 \
    "$BF_BIN" run --until-idle 2>>"$T/pooled.log" &
DAEMON_PID=$!
PIDS+=($DAEMON_PID)
wait_for "the daemon's sessions are PgBouncer clients" 15 pgb_clients_ge backfilld 2
daemon_wait "$DAEMON_PID" 120
log "600 runs through pgbouncer in $((SECONDS - t0)) s"
check "the pooled daemon exits 0" "0" "$DAEMON_RC"
check_cmd "it ran poll-only" grep -q '"msg":"starting".*"poll_only":true' "$T/pooled.log"
check "every run succeeded" "0" "$(sql "SELECT count(*) FROM job_runs WHERE status <> 'succeeded'")"
check "every chunk done" "600" "$(sql "SELECT count(DISTINCT (symbol, range_start)) FROM job_runs WHERE status = 'succeeded'")"
check "no error logged" "0" "$(grep -c '"level":"\(error\|crit\)"' "$T/pooled.log" || true)"
load_expected h1 --symbols "$SYMBOLS50" --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-12-31)"
check_bars_exact
check "bars_written adds up" "$(sql "SELECT count(*) FROM bars")" "$(sql "SELECT sum(bars_written) FROM job_runs")"
# Every claim and every completing write was its own transaction (claims have
# distinct claimed_at, writes distinct finished_at): at least that many must
# have gone through PgBouncer (its totals refresh every stats_period = 1 s).
need=$(sql "SELECT (SELECT count(DISTINCT claimed_at) FROM job_run_claims) + (SELECT count(DISTINCT finished_at) FROM job_runs)")
pgb_xacts_ge() { [ $(($(pgb_stat total_xact_count) - xact0)) -ge "$1" ]; }
wait_for "pgbouncer counted >= $need transactions" 10 pgb_xacts_ge "$need"
xact1=$(pgb_stat total_xact_count)
log "pgbouncer: $((xact1 - xact0)) transactions, $(pgb_stat total_query_count) queries for database backfilld; claims + completing writes: $need"
check_cmd "the traffic went through pgbouncer ($((xact1 - xact0)) transactions >= $need claims and writes)" \
    test $((xact1 - xact0)) -ge "$need"
check_cmd "and that is real traffic (>= 10 claims and writes)" test "$need" -ge 10

# --- without poll-only: LISTEN goes through but NOTIFY never comes back; polling
# alone must still find work (at the default 1 s poll) ---------------------------------
BACKFILLD_DATABASE_URL="$PGB" bf enqueue --symbols AAPL,MSFT,NVDA --timeframe h1 \
    --from 2025-01-01 --to 2025-03-31 >/dev/null
check "9 more runs queued" "9" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'queued'")"
BACKFILLD_DATABASE_URL="$PGB" "$BF_BIN" run --until-idle 2>>"$T/listen.log" &
DAEMON_PID=$!
PIDS+=($DAEMON_PID)
daemon_wait "$DAEMON_PID" 60
check "without poll-only it still finishes, exit 0" "0" "$DAEMON_RC"
check "and every run succeeded" "0" "$(sql "SELECT count(*) FROM job_runs WHERE status <> 'succeeded'")"
finish
