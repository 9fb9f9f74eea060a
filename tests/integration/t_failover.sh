#!/usr/bin/env bash
# Failover: a primary and a streaming standby (pg_basebackup -R), the daemon
# connected with a multi-host URI and target_session_attrs=read-write.
#
# First, a dead first host (nothing listens there) must not keep the daemon
# from the second: libpq moves on to the next host on a new socket, and the
# poll has to follow it. Then, mid-backfill, the primary is stopped with
# -m immediate and the standby promoted. The daemon finds the new primary by
# itself, says where it went, and finishes with exact data. Commits the
# asynchronous standby never received come back as runs whose lease expires
# on the new primary; they are rescued and redone, never missing bars.
. "$(dirname "$0")/lib.sh"

# The primary, on TCP so that the standby can stream from it.
pg_start_tcp
P1=$PG_TCP_PORT
bf migrate >/dev/null

# The standby: a base backup with -R writes standby.signal and primary_conninfo.
mkdir -p "$T/pg2"
chown postgres: "$T/pg2"
runuser -u postgres -- "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$P1" -U postgres -D "$T/pg2/data" -R \
    -X stream -c fast >"$T/basebackup.out" 2>&1 || { cat "$T/basebackup.out"; fail "pg_basebackup"; }
for try in 1 2 3; do
    P2=$(free_port)
    printf "port = %s\nunix_socket_directories = '%s'\n" "$P2" "$T/pg2" >>"$T/pg2/data/postgresql.conf"
    if runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg2/data" -l "$T/pg2/postgres.log" -w -t 60 start \
        >/dev/null 2>&1; then break; fi
    [ "$try" -lt 3 ] || fail "the standby did not start"
done
check "the standby is in recovery" "t" "$(psql -h "$T/pg2" -p "$P2" -XAtq -c 'SELECT pg_is_in_recovery()')"

sim_start --latency-ms 40
export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_BATCH_SYMBOLS=1 BACKFILLD_CONCURRENCY=4 \
    BACKFILLD_LEASE_SECONDS=4 BACKFILLD_RESCUE_INTERVAL_MS=300 BACKFILLD_RUN_RETRY_BASE_MS=50 \
    BACKFILLD_RUN_RETRY_MAX_MS=500 BACKFILLD_MAX_ATTEMPTS=20 BACKFILLD_WORKER_ID=w1

# 1. A dead first host, at start-up.
bf enqueue --symbols FIRST --timeframe d1 --from 2024-01-01 --to 2024-01-31 >/dev/null
DEAD=$(free_port)
BACKFILLD_DATABASE_URL="postgresql://postgres@127.0.0.1:$DEAD,127.0.0.1:$P1/backfilld" daemon_start d0 --until-idle
daemon_wait "$DAEMON_PID" 60
check "with the first host down the daemon connects to the second and exits 0" "0" "$DAEMON_RC"
check_cmd "it says which server it reached" grep -q "\"msg\":\"db connected\",\"conn\":\"main\",\"host\":\"127.0.0.1\",\"port\":\"$P1\"" "$T/d0.log"
check "the run on it succeeded" "succeeded" "$(sql "SELECT status FROM job_runs WHERE symbol = 'FIRST'")"
sql "DELETE FROM job_runs; DELETE FROM job_definitions; DELETE FROM bars"

# 2. A failover mid-backfill.
SYMS="AAPL,MSFT,NVDA,AMZN,META,GOOGL,TSLA,JPM"
bf enqueue --symbols "$SYMS" --timeframe h1 --from 2024-01-01 --to 2024-12-31 >/dev/null
TOTAL=$(sql "SELECT count(*) FROM job_runs")
check "96 runs queued" "96" "$TOTAL"
export BACKFILLD_DATABASE_URL="host=127.0.0.1,127.0.0.1 port=$P1,$P2 user=postgres dbname=backfilld target_session_attrs=read-write connect_timeout=3"
daemon_start d1 --until-idle
wait_for "a quarter of the runs done" 60 sql_ge "SELECT count(*) FROM job_runs WHERE status = 'succeeded'" $((TOTAL / 4))
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -m immediate -w stop >/dev/null
log "primary stopped (-m immediate) with $(psql -h "$T/pg2" -p "$P2" -XAtq -d backfilld -c "SELECT count(*) FROM job_runs WHERE status = 'succeeded'") succeeded runs on the standby"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg2/data" -w promote >/dev/null
export PGHOST="$T/pg2" PGPORT=$P2
check "the standby is promoted" "f" "$(sql 'SELECT pg_is_in_recovery()')"

daemon_wait "$DAEMON_PID" 180
check "the daemon exits 0 after the failover" "0" "$DAEMON_RC"
check_cmd "the lost primary was logged" grep -q '"msg":"db connection lost"' "$T/d1.log"
check_cmd "the new primary was found and named (port $P2)" \
    grep -q "\"msg\":\"db connected\",\"conn\":\"main\",\"host\":\"127.0.0.1\",\"port\":\"$P2\"" "$T/d1.log"
check "every run succeeded on the new primary" "$TOTAL|$TOTAL" \
    "$(sql "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM job_runs")"
load_expected h1 --symbols "$SYMS" --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-12-31)"
check_bars_exact
check "each run's bars_written equals the bars stored in its range" "0" "$(sql "
    SELECT count(*) FROM job_runs r
     WHERE r.bars_written <> (SELECT count(*) FROM bars b WHERE b.symbol = r.symbol
            AND b.timeframe = r.timeframe AND b.ts >= r.range_start AND b.ts < r.range_end)")"
finish
