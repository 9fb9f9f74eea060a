#!/usr/bin/env bash
# Scale benchmark (issue #9): the queue at "every US stock × 10 years" and the
# write path into a bars table that already holds tens of millions of rows.
#
# The job state is built directly in SQL on a private cluster (after
# `backfilld migrate`): SIZE m1 fetch_historical definitions over
# YEAR_FROM-01-01 .. (YEAR_TO+1)-01-01, and for every one of them the runs
# backfill_chunks() cuts that range into (the same rows enqueue_range would
# insert: one run per chunk, priority/max_attempts of the definition). Every
# chunk is present as a run, so schedule_due_jobs() has nothing to do.
# Variants (VARIANTS, each rebuilt from scratch):
#   queued          every run queued (right after enqueueing everything)
#   half_succeeded  runs with range_start before the middle of the range succeeded
#                   (one job_run_claims row each, finished over the last 30 days),
#                   the rest queued
#   half_disabled   every run queued, every second definition disabled
# In each: schedule_due_jobs() with nothing to do, after one new definition,
# after one changed definition (backfill_from one year earlier); 50 calls of
# claim_queued_job(worker, 100, 30) (p50/p99); renew_job_leases() of 400 held
# leases; rescue_expired_job_runs() with none expired and with 400 expired;
# `backfilld status` and `status --json` (the real commands); job_runs on disk.
# SQL operations are timed server-side: clock_timestamp() before and after,
# in one psql session (psql start-up excluded; one local round trip included).
#
# Write path: two more databases in the same cluster, both migrated; one gets
# BARS_PREFILL rows in bars (INSERT … SELECT generate_series, symbols spread
# over A…Z so the workload's symbols land inside the primary key, then VACUUM
# ANALYZE), the other stays empty. The same workload runs into each: the real
# daemon (`run --until-idle`) against alpaca-sim, WRITE_SYMBOLS fresh symbols
# × m1 over WRITE_FROM..WRITE_TO. bars/s = bars written / (max(finished_at) −
# min(started_at)); after each round the workload's bars are compared with
# `alpaca-sim dump` over the New York days enqueued (schema 6), every column
# both ways (not timed), and the script exits 1 when they differ. The prefill
# has the daemon's 14 columns (SIP, raw, final, fetched_at).
#
# Env: SIZE (definitions, default 10000), YEAR_FROM/YEAR_TO (2016/2025),
#      VARIANTS ("queued half_succeeded half_disabled"), CLAIMS (50),
#      OP_TIMEOUT (statement_timeout per timed call, seconds, default 600),
#      BARS_PREFILL (default 50000000; 0 skips the write path),
#      BARS_PREFILL_SYMBOLS (1000), WRITE_SYMBOLS (100),
#      WRITE_FROM/WRITE_TO (2024-01-01/2024-02-29), WRITE_ROUNDS (2: empty, full,
#      empty, full; 1: empty then full), ROUND_TIMEOUT (600),
#      PG_SHARED_BUFFERS (2GB), DEADLINE (a date(1) time, e.g. "10:55 UTC":
#      what would start after it is skipped and listed), KEEP_TMP=1.
# Order: the write path first (it is bounded), then the variants.
# Quick try: SIZE=500 BARS_PREFILL=2000000 bench/scale.sh
. "$(dirname "$0")/lib.sh"

SIZE=${SIZE:-10000}
YEAR_FROM=${YEAR_FROM:-2016}
YEAR_TO=${YEAR_TO:-2025}
VARIANTS=${VARIANTS:-"queued half_succeeded half_disabled"}
CLAIMS=${CLAIMS:-50}
OP_TIMEOUT=${OP_TIMEOUT:-600}
BARS_PREFILL=${BARS_PREFILL:-50000000}
BARS_PREFILL_SYMBOLS=${BARS_PREFILL_SYMBOLS:-1000}
WRITE_SYMBOLS=${WRITE_SYMBOLS:-100}
WRITE_FROM=${WRITE_FROM:-2024-01-01}
WRITE_TO=${WRITE_TO:-2024-02-29}
WRITE_ROUNDS=${WRITE_ROUNDS:-2}
DEADLINE=${DEADLINE:-}
ROUND_TIMEOUT=${ROUND_TIMEOUT:-600}
PG_SHARED_BUFFERS=${PG_SHARED_BUFFERS:-2GB}

for v in SIZE YEAR_FROM YEAR_TO CLAIMS OP_TIMEOUT BARS_PREFILL_SYMBOLS WRITE_SYMBOLS WRITE_ROUNDS ROUND_TIMEOUT; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer" >&2; exit 64; }
done
[[ "$BARS_PREFILL" =~ ^[0-9]+$ ]] || { echo "BARS_PREFILL must be an integer" >&2; exit 64; }
[ "$YEAR_TO" -ge "$YEAR_FROM" ] || { echo "YEAR_TO < YEAR_FROM" >&2; exit 64; }
for v in $VARIANTS; do
    case $v in queued | half_succeeded | half_disabled) ;; *) echo "unknown variant $v" >&2; exit 64 ;; esac
done
DEADLINE_S=0
if [ -n "$DEADLINE" ]; then
    DEADLINE_S=$(date -d "$DEADLINE" +%s) || { echo "DEADLINE: not a date(1) time: $DEADLINE" >&2; exit 64; }
fi
# past_deadline WHAT: true (and says so) once DEADLINE has passed.
past_deadline() {
    [ "$DEADLINE_S" -gt 0 ] && [ "$(date +%s)" -ge "$DEADLINE_S" ] || return 1
    log "DEADLINE $DEADLINE passed: skipping $1"
    SKIPPED+=("$1")
}
SKIPPED=()
BAD=0
[ -x "$BF_BIN" ] && [ -x "$BF_SIM" ] || { echo "build first: make build (missing $BF_BIN or $BF_SIM)" >&2; exit 69; }

# New York midnights (schema 6): what `enqueue --from YEAR_FROM-01-01 --to
# YEAR_TO-12-31` stores as the definition's range, and where chunks are cut.
FROM="$YEAR_FROM-01-01 00:00 America/New_York"
TO="$((YEAR_TO + 1))-01-01 00:00 America/New_York"
MID="$(((YEAR_FROM + YEAR_TO + 1) / 2))-01-01 00:00 America/New_York"
[ $(((YEAR_TO - YEAR_FROM + 1) % 2)) -eq 0 ] || MID="$(((YEAR_FROM + YEAR_TO) / 2))-07-01 00:00 America/New_York"

snapshot_binaries

# --- Postgres: a private cluster with bulk-benchmark settings ----------------
pg_start
cat >>"$T/pg/data/postgresql.conf" <<CONF
# bench/scale.sh (later lines win over lib.sh's)
shared_buffers = $PG_SHARED_BUFFERS
work_mem = 64MB
maintenance_work_mem = 1GB
effective_cache_size = 16GB
wal_level = minimal
max_wal_senders = 0
max_wal_size = 16GB
checkpoint_timeout = 30min
autovacuum = off
jit = off
random_page_cost = 1.1
max_parallel_workers_per_gather = 2
CONF
pg_stop
pg_restart_only
bf migrate >"$T/migrate.out"
PG_SETTINGS=$(sql "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ' ' ORDER BY name)
                     FROM pg_settings WHERE name IN ('shared_buffers','work_mem','maintenance_work_mem',
                       'effective_cache_size','fsync','synchronous_commit','full_page_writes','wal_level',
                       'max_wal_size','checkpoint_timeout','autovacuum','jit','random_page_cost',
                       'max_parallel_workers_per_gather','server_version')")
log "Postgres: $PG_SETTINGS"
log "temp dir $T; SIZE=$SIZE × m1 $FROM .. $TO; variants: $VARIANTS"

export BACKFILLD_METRICS_LISTEN=
export BACKFILLD_PROGRESS_INTERVAL_MS=60000
export BACKFILLD_LOG_LEVEL=${BACKFILLD_LOG_LEVEL:-warn}

# psql on a script from stdin, in one session, stop at the first error.
psql_s() { psql -XAtq -v ON_ERROR_STOP=1 "$@"; }

# --- the job state ------------------------------------------------------------

# build_state VARIANT: job_definitions and job_runs (and for half_succeeded
# job_run_claims) from scratch. session_replication_role = replica skips the
# FK checks and the NOTIFY triggers of the bulk insert: the rows are consistent
# by construction (the FK check would only cost time, the NOTIFY wakes nobody).
build_state() {
    local v=$1 enabled="true" status="'queued'"
    [ "$v" = half_disabled ] && enabled="(i % 2 = 0)"
    psql_s <<SQL
SET client_min_messages = warning;
TRUNCATE job_run_claims, job_runs, job_definitions RESTART IDENTITY CASCADE;
SET session_replication_role = replica;
INSERT INTO job_definitions (symbol, timeframe, job_type, enabled, backfill_from, backfill_to,
                             created_at, updated_at)
SELECT format('S%s', lpad(i::text, 5, '0')), 'm1', 'fetch_historical', $enabled,
       '$FROM', '$TO', now() - interval '60 days', now() - interval '60 days'
  FROM generate_series(0, $SIZE - 1) AS i;
INSERT INTO job_runs (job_def_id, job_type, symbol, timeframe, feed, adjustment, range_start, range_end,
                      priority, max_attempts, status, attempt, run_after, bars_written, pages,
                      created_at, started_at, finished_at, updated_at)
SELECT d.id, d.job_type, d.symbol, d.timeframe, d.feed, d.adjustment, c.chunk_start, c.chunk_end,
       d.priority, coalesce(d.max_attempts, 5), s.status,
       CASE WHEN s.status = 'succeeded' THEN 1 ELSE 0 END,
       d.created_at, CASE WHEN s.status = 'succeeded' THEN 1950 ELSE 0 END,
       CASE WHEN s.status = 'succeeded' THEN 1 ELSE 0 END,
       d.created_at, s.fin, s.fin, coalesce(s.fin, d.created_at)
  FROM job_definitions d
 CROSS JOIN LATERAL backfill_chunks(d.timeframe, d.backfill_from, d.backfill_to) c
 CROSS JOIN LATERAL (SELECT CASE WHEN '$v' = 'half_succeeded' AND c.chunk_start < '$MID'
                                 THEN 'succeeded' ELSE 'queued' END AS status) s0
 CROSS JOIN LATERAL (SELECT s0.status,
                            CASE WHEN s0.status = 'succeeded'
                                 THEN now() - (extract(epoch FROM c.chunk_start)::bigint % 2592000 + d.id % 3600)
                                              * interval '1 second' END AS fin) s;
INSERT INTO job_run_claims (run_id, attempt, worker, claimed_at)
SELECT id, 1, 'bench-history', started_at FROM job_runs WHERE status = 'succeeded';
RESET session_replication_role;
-- The bulk insert skipped the triggers that keep the paused flags, coverage
-- and counts (schema 4): build them as migration 004 does for an existing queue.
SELECT backfilld_rebuild_queue_state();
SQL
    psql_s <<<"VACUUM ANALYZE job_definitions; VACUUM ANALYZE job_runs; VACUUM ANALYZE job_run_claims; VACUUM ANALYZE job_coverage;"
}

# expected runs: the chunks of every definition (computed, not counted from job_runs)
expected_runs() {
    sql "SELECT count(*) * $SIZE FROM backfill_chunks('m1', '$FROM', '$TO')"
}

# timed_sql LABEL SQL: runs SQL once in its own session, prints "ms result"
# ("timeout -" when it failed: OP_TIMEOUT, or an error, in $T/LABEL.err).
timed_sql() {
    psql_s -F' ' 2>"$T/$1.err" <<SQL || echo "timeout -"
SET statement_timeout = '${OP_TIMEOUT}s';
SELECT clock_timestamp() AS t0 \gset
$2 \gset r_
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric * 1000, 1), :'r_n';
SQL
}

# timed_cmd CMD...: wall ms of a command (stdout to $T/cmd.out), or "timeout".
timed_cmd() {
    local a b rc=0
    a=$(now_ms)
    timeout "$OP_TIMEOUT" "$@" >"$T/cmd.out" 2>"$T/cmd.err" || rc=$?
    b=$(now_ms)
    if [ "$rc" -eq 124 ]; then echo "timeout"; elif [ "$rc" -ne 0 ]; then echo "exit$rc"; else echo $((b - a)); fi
}

declare -A R
measure_variant() {
    local v=$1 t0 t1 n out
    past_deadline "variant $v" && return 0
    t0=$(now_ms)
    build_state "$v"
    t1=$(now_ms)
    R[$v.build_s]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", (b - a) / 1000 }')
    R[$v.runs]=$(sql "SELECT count(*) FROM job_runs")
    n=$(expected_runs)
    [ "${R[$v.runs]}" = "$n" ] || fail "$v: $n runs expected, ${R[$v.runs]} built"
    log "$v: built ${R[$v.runs]} runs in ${R[$v.build_s]} s; $(sql "SELECT string_agg(status || '=' || n, ' ') FROM (SELECT status, count(*) n FROM job_runs GROUP BY 1 ORDER BY 1) x")"
    R[$v.size]=$(sql "SELECT pg_size_pretty(pg_total_relation_size('job_runs')) || ' (heap ' ||
                             pg_size_pretty(pg_relation_size('job_runs')) || ', indexes ' ||
                             pg_size_pretty(pg_indexes_size('job_runs')) || '); job_run_claims ' ||
                             pg_size_pretty(pg_total_relation_size('job_run_claims'))")

    # the scheduler: every definition due for a look (as after a migration:
    # still nothing to queue), then nothing to do, then one new definition,
    # then one changed one
    read -r ms n <<<"$(timed_sql sched_all "SELECT schedule_due_jobs(5) AS n")"
    R[$v.sched_all]=$ms R[$v.sched_all_n]=$n
    log "$v: schedule_due_jobs, every definition looked at: $ms ms ($n queued)"
    read -r ms n <<<"$(timed_sql sched0 "SELECT schedule_due_jobs(5) AS n")"
    R[$v.sched0]=$ms R[$v.sched0_n]=$n
    [ "$n" = 0 ] || log "WARNING $v: schedule_due_jobs() with nothing to do queued $n runs"
    log "$v: schedule_due_jobs, nothing to do: $ms ms ($n queued)"
    sql "INSERT INTO job_definitions (symbol, timeframe, job_type, backfill_from, backfill_to)
         VALUES ('NEWDEF', 'm1', 'fetch_historical', '$FROM', '$TO')" >/dev/null
    read -r ms n <<<"$(timed_sql sched_new "SELECT schedule_due_jobs(5) AS n")"
    R[$v.sched_new]=$ms R[$v.sched_new_n]=$n
    log "$v: schedule_due_jobs, one new definition: $ms ms ($n queued)"
    sql "UPDATE job_definitions SET backfill_from = backfill_from - interval '1 year'
          WHERE id = (SELECT min(id) FROM job_definitions WHERE enabled)" >/dev/null
    read -r ms n <<<"$(timed_sql sched_chg "SELECT schedule_due_jobs(5) AS n")"
    R[$v.sched_chg]=$ms R[$v.sched_chg_n]=$n
    log "$v: schedule_due_jobs, one changed definition: $ms ms ($n queued)"

    past_deadline "$v: claims, renewal, rescue, status" && return 0
    # claims: the first claim of a new session (plpgsql compiles the claim and
    # the triggers it fires once per session), then, in one session after a
    # warm-up claim of 1, CLAIMS calls of 100, each its own statement (autocommit)
    read -r ms n <<<"$(timed_sql claim_first "SELECT count(*) AS n FROM claim_queued_job('bench-w1', 100, 30)")"
    R[$v.claim_first]=$ms
    log "$v: claim 100, first call of a session: $ms ms ($n claimed)"
    {
        echo "SET statement_timeout = '${OP_TIMEOUT}s';"
        echo "SELECT count(*) AS w FROM claim_queued_job('bench-w1', 1, 30) \\gset"
        echo "CREATE TEMP TABLE t (i int, n int, ms float8);"
        for ((i = 1; i <= CLAIMS; i++)); do
            echo "SELECT clock_timestamp() AS t0 \\gset"
            echo "SELECT count(*) AS n FROM claim_queued_job('bench-w1', 100, 30) \\gset"
            echo "INSERT INTO t VALUES ($i, :n, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000);"
        done
        echo "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                     round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                     round(max(ms)::numeric, 1), sum(n) FROM t;"
    } >"$T/claims.sql"
    read -r R[$v.claim_p50] R[$v.claim_p99] R[$v.claim_max] R[$v.claimed] <<<"$(psql_s -F' ' -f "$T/claims.sql" 2>"$T/claims.err" || echo "timeout timeout timeout -")"
    log "$v: claim 100 × $CLAIMS: p50 ${R[$v.claim_p50]} ms, p99 ${R[$v.claim_p99]} ms (${R[$v.claimed]} claimed)"

    # renewal of 400 held leases (the median of 5 calls)
    out=$(psql_s -F' ' 2>"$T/renew.err" <<SQL || echo "timeout -"
SET statement_timeout = '${OP_TIMEOUT}s';
SELECT array_agg(id ORDER BY id)::text AS ids, array_agg(attempt ORDER BY id)::text AS att,
       array_agg(0::bigint ORDER BY id)::text AS bars
  FROM (SELECT id, attempt FROM job_runs WHERE status = 'running' AND locked_by = 'bench-w1'
         ORDER BY id LIMIT 400) x \gset
CREATE TEMP TABLE t (n int, ms float8);
$(for _ in 1 2 3 4 5; do
    echo "SELECT clock_timestamp() AS t0 \\gset"
    echo "SELECT count(*) AS n FROM renew_job_leases('bench-w1', :'ids'::bigint[], :'att'::int[], :'bars'::bigint[], 30) \\gset"
    echo "INSERT INTO t VALUES (:n, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000);"
done)
SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1), min(n) FROM t;
SQL
)
    read -r R[$v.renew] R[$v.renew_n] <<<"$out"
    log "$v: renew ${R[$v.renew_n]} leases: ${R[$v.renew]} ms"

    # rescue: with none expired (the steady-state call), then with 400 expired
    read -r ms n <<<"$(timed_sql rescue0 "SELECT rescue_expired_job_runs() AS n")"
    R[$v.rescue0]=$ms R[$v.rescue0_n]=$n
    sql "UPDATE job_runs SET locked_until = now() - interval '1 minute'
          WHERE id IN (SELECT id FROM job_runs WHERE status = 'running' ORDER BY id LIMIT 400)" >/dev/null
    read -r ms n <<<"$(timed_sql rescue400 "SELECT rescue_expired_job_runs() AS n")"
    R[$v.rescue400]=$ms R[$v.rescue400_n]=$n
    log "$v: rescue none expired: ${R[$v.rescue0]} ms (${R[$v.rescue0_n]}); 400 expired: $ms ms ($n)"

    # status, the real commands
    past_deadline "$v: status" && return 0
    R[$v.status]=$(timed_cmd "$BF_BIN" status)
    R[$v.status_json]=$(timed_cmd "$BF_BIN" status --json)
    log "$v: status ${R[$v.status]} ms, status --json ${R[$v.status_json]} ms"

    # the daemon's own progress query (also what /metrics serves): a real
    # daemon on this state, fetching, one progress line a second; stats_ms is
    # each line's query latency, send to answer. The largest of lines 2-4.
    past_deadline "$v: progress line" && return 0
    BACKFILLD_PROGRESS_INTERVAL_MS=1000 BACKFILLD_LOG_LEVEL=info BACKFILLD_RATE_LIMIT=1000000 \
        daemon_start "p-$v"
    local deadline=$(($(now_ms) + 120000))
    while [ "$(grep -c '"msg":"progress"' "$T/p-$v.log" 2>/dev/null || true)" -lt 4 ] && [ "$(now_ms)" -lt "$deadline" ]; do
        sleep 0.2
    done
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait_deadline "$DAEMON_PID" 60
    forget_pid "$DAEMON_PID"
    R[$v.progress]=$(awk '/"msg":"progress"/ { n++; if (n >= 2 && n <= 4 && match($0, /"stats_ms":[0-9]+/)) {
                              v = substr($0, RSTART + 11, RLENGTH - 11) + 0; if (v > m) m = v } }
                          END { if (n >= 4) print m; else print "-" }' "$T/p-$v.log")
    log "$v: the daemon's progress query: ${R[$v.progress]} ms (largest of 3)"
}

# --- the write path -------------------------------------------------------------
declare -A W
write_round() { # DB LABEL
    local db=$1 label=$2 rc
    # a second round: the first one's rows out again, the table vacuumed (as the first round found it)
    PGDATABASE=$db psql_s <<<"SET client_min_messages = warning;
        TRUNCATE job_run_claims, job_runs, job_definitions RESTART IDENTITY CASCADE;"
    # (the empty table is truncated, so every round into it starts from a new, empty relation)
    if [ "$db" = bf_empty ]; then
        PGDATABASE=$db psql_s <<<"TRUNCATE bars; VACUUM ANALYZE bars;"
    elif [ "$(PGDATABASE=$db sql "SELECT count(*) FROM bars WHERE symbol LIKE 'S%A'")" != 0 ]; then
        PGDATABASE=$db psql_s <<<"DELETE FROM bars WHERE symbol LIKE 'S%A'; VACUUM ANALYZE bars;"
    fi
    BACKFILLD_DATABASE_URL="${BACKFILLD_DATABASE_URL/dbname=backfilld/dbname=$db}" \
        "$BF_BIN" enqueue --symbols-file "$T/wsymbols.txt" --timeframe m1 --from "$WRITE_FROM" --to "$WRITE_TO" >/dev/null
    sim_get /__sim/reset >/dev/null
    BACKFILLD_DATABASE_URL="${BACKFILLD_DATABASE_URL/dbname=backfilld/dbname=$db}" daemon_start "w-$label" --until-idle
    wait_deadline "$DAEMON_PID" "$ROUND_TIMEOUT"
    forget_pid "$DAEMON_PID"
    rc=$WAIT_RC
    IFS='|' read -r ok notok bars secs <<<"$(PGDATABASE=$db sql "
        SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status <> 'succeeded'),
               (SELECT count(*) FROM bars WHERE symbol LIKE 'S%A'),
               round(extract(epoch FROM max(finished_at) - min(started_at))::numeric, 3)
          FROM job_runs")"
    local note=""
    [ "$TIMED_OUT" -eq 1 ] && note="TIMED OUT"
    [ "$rc" -ne 0 ] && note="$note exit $rc"
    [ "$notok" -ne 0 ] && note="$note $notok runs not succeeded"
    W[$label.bars]=$bars W[$label.secs]=$secs W[$label.note]=$note
    W[$label.rate]=$(awk -v n="$bars" -v s="$secs" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "-" }')
    W[$label.total]=$(PGDATABASE=$db sql "SELECT count(*) FROM bars")
    # Exact: the workload's bars equal the simulator's (every column, both ways), after the timing.
    local miss extra off
    [ "$(PGDATABASE=$db sql "SELECT to_regclass('expected_bars') IS NOT NULL")" = t ] ||
        PGDATABASE=$db bench_load_expected "$T/wexpected.csv" m1
    read -r miss extra off <<<"$(PGDATABASE=$db bench_bars_diff bars "symbol LIKE 'S%A'")"
    if [ "$miss$extra$off" != 000 ]; then
        W[$label.note]="${W[$label.note]:+${W[$label.note]} }NOT EXACT: $miss missing, $extra extra, $off not sip/raw/final"
        BAD=1
    fi
    log "write $label: $bars bars in $secs s = ${W[$label.rate]} bars/s (table now ${W[$label.total]} rows) $note"
}

if [ "$BARS_PREFILL" -gt 0 ]; then
    createdb bf_empty && createdb bf_full
    for db in bf_empty bf_full; do
        BACKFILLD_DATABASE_URL="${BACKFILLD_DATABASE_URL/dbname=backfilld/dbname=$db}" bf migrate >/dev/null
    done
    per=$(((BARS_PREFILL + BARS_PREFILL_SYMBOLS - 1) / BARS_PREFILL_SYMBOLS))
    t0=$(now_ms)
    # symbols A00000 … Z…: spread over the alphabet, so the workload's S…A
    # symbols go inside the primary key, not after its last leaf. Generated in
    # key order (the letter grows with the number), as a backfill by symbol would.
    PGDATABASE=bf_full psql_s <<SQL
SET client_min_messages = warning;
INSERT INTO bars (symbol, timeframe, feed, adjustment, ts, open, high, low, close, volume, trade_count,
                  vwap, final, fetched_at)
SELECT chr(65 + (s * 26) / $BARS_PREFILL_SYMBOLS) || lpad(s::text, 5, '0'), 'm1', 'sip', 'raw',
       timestamptz '2015-01-02 14:30+00' + g * interval '1 minute',
       100 + (g % 97) * 0.01, 100.5 + (g % 89) * 0.01, 99.5 + (g % 83) * 0.01, 100 + (g % 79) * 0.01,
       1000 + g % 5000, 10 + g % 300, 100 + (g % 71) * 0.01, true, now()
  FROM generate_series(0, $BARS_PREFILL_SYMBOLS - 1) AS s,
       generate_series(0, least($per, $BARS_PREFILL - s::bigint * $per) - 1) AS g;
VACUUM ANALYZE bars;
SQL
    t1=$(now_ms)
    PREFILL_ROWS=$(PGDATABASE=bf_full sql "SELECT count(*) FROM bars")
    PREFILL_SIZE=$(PGDATABASE=bf_full sql "SELECT pg_size_pretty(pg_total_relation_size('bars'))")
    PREFILL_S=$(((t1 - t0) / 1000))
    log "prefilled bf_full.bars: $PREFILL_ROWS rows, $PREFILL_SIZE, in $PREFILL_S s"
    bench_symbols "$WRITE_SYMBOLS" "$T/wsymbols.txt"
    sim_start --rate 0 --latency-ms 0
    # the simulator's bars for the workload, over the New York days enqueued (schema 6)
    bench_dump "$T/wexpected.csv" 1Min "$(paste -sd, "$T/wsymbols.txt")" "$WRITE_FROM" "$WRITE_TO"
    export BACKFILLD_RATE_LIMIT=1000000
    for ((r = 1; r <= WRITE_ROUNDS; r++)); do
        [ "$r" -gt 1 ] && past_deadline "write round $r" && { WRITE_ROUNDS=$((r - 1)); break; }
        write_round bf_empty "empty$r"
        write_round bf_full "full$r"
    done
fi

# --- the job-state operations ---------------------------------------------------
# (the progress-line measurement runs a daemon: it needs the simulator)
[ "$BARS_PREFILL" -gt 0 ] || sim_start --rate 0 --latency-ms 0
for v in $VARIANTS; do measure_variant "$v"; done

# --- the table -------------------------------------------------------------------
ok() { # VALUE TARGET: "ok" when VALUE <= TARGET (numbers), else "MISS"
    awk -v x="$1" -v t="$2" 'BEGIN { if (x ~ /^[0-9.]+$/) print (x + 0 <= t + 0 ? "ok" : "MISS"); else print "MISS" }'
}
echo
echo "backfilld scale benchmark (bench/scale.sh), $(date -u '+%F %H:%M UTC'), $(nproc) cores, $(free -g | awk '/^Mem/ {print $2}') GB RAM (shared machine)"
echo "$("$BF_BIN" --version 2>/dev/null | head -1) (binary built $BF_BUILT)"
echo "state: $SIZE m1 definitions × $FROM .. $TO ($(expected_runs) runs); SQL timed server-side (clock_timestamp deltas)"
echo "Postgres: $PG_SETTINGS"
echo
printf '%-34s %10s' "operation" "target"
for v in $VARIANTS; do printf ' %16s' "$v"; done
echo
row() { # LABEL TARGET KEY [TARGET_NUM]
    local v val
    printf '%-34s %10s' "$1" "$2"
    for v in $VARIANTS; do
        val=${R[$v.$3]:--}
        [ -n "${4:-}" ] && val="$val $(ok "$val" "$4")"
        printf ' %16s' "$val"
    done
    echo
}
row "runs in job_runs" "" runs
row "state build (s)" "" build_s
row "schedule, all defs looked at (ms)" "" sched_all
row "  runs it queued" "0" sched_all_n
row "schedule, nothing to do (ms)" "≤ 50" sched0 50
row "  runs it queued" "0" sched0_n
row "schedule, one new def (ms)" "" sched_new
row "  runs it queued" "" sched_new_n
row "schedule, one changed def (ms)" "" sched_chg
row "  runs it queued" "" sched_chg_n
row "claim 100, a session's first (ms)" "" claim_first
row "claim 100, p50 of $CLAIMS (ms)" "" claim_p50
row "claim 100, p99 of $CLAIMS (ms)" "≤ 10" claim_p99 10
row "  runs claimed" "" claimed
row "renew 400 leases (ms, median of 5)" "" renew
row "rescue, none expired (ms)" "" rescue0
row "rescue, 400 expired (ms)" "" rescue400
row "backfilld status (ms)" "≤ 1000" status 1000
row "backfilld status --json (ms)" "≤ 1000" status_json 1000
row "daemon progress query (ms)" "≤ 1000" progress 1000
echo
for v in $VARIANTS; do echo "job_runs on disk, $v: ${R[$v.size]:--}"; done
[ ${#SKIPPED[@]} -eq 0 ] || echo "SKIPPED (DEADLINE $DEADLINE): ${SKIPPED[*]}"
echo "OP_TIMEOUT=${OP_TIMEOUT}s per timed call (a call that hit it shows as '-' or 'timeout')"
if [ "$BARS_PREFILL" -gt 0 ]; then
    echo
    echo "write path: $WRITE_SYMBOLS fresh symbols × m1 $WRITE_FROM..$WRITE_TO, real daemon (run --until-idle, defaults,"
    echo "BACKFILLD_RATE_LIMIT=1000000) against alpaca-sim (--rate 0, no latency); full table prefilled with"
    echo "$PREFILL_ROWS rows ($PREFILL_SIZE, $BARS_PREFILL_SYMBOLS symbols, built in $PREFILL_S s)"
    printf '%-10s %10s %10s %12s %14s  %s\n' round bars seconds bars/s "table rows" note
    for ((r = 1; r <= WRITE_ROUNDS; r++)); do
        for l in "empty$r" "full$r"; do
            printf '%-10s %10s %10s %12s %14s  %s\n' "$l" "${W[$l.bars]}" "${W[$l.secs]}" "${W[$l.rate]}" \
                "${W[$l.total]}" "${W[$l.note]}"
        done
        echo "  ratio full$r/empty$r = $(awk -v f="${W[full$r.rate]}" -v e="${W[empty$r.rate]}" \
            'BEGIN { if (e > 0 && f ~ /^[0-9.]+$/) printf "%.2f (target ≥ 0.80: %s)", f / e, (f / e >= 0.8 ? "ok" : "MISS"); else print "n/a" }')"
    done
    # all rounds together: total bars / total seconds, full against empty
    fb=0 fs=0 eb=0 es=0
    for ((r = 1; r <= WRITE_ROUNDS; r++)); do
        fb=$((fb + ${W[full$r.bars]:-0})) eb=$((eb + ${W[empty$r.bars]:-0}))
        fs=$(awk -v a="$fs" -v b="${W[full$r.secs]:-0}" 'BEGIN { print a + b }')
        es=$(awk -v a="$es" -v b="${W[empty$r.secs]:-0}" 'BEGIN { print a + b }')
    done
    echo "  all $WRITE_ROUNDS round(s): empty $(awk -v n="$eb" -v s="$es" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }') bars/s," \
        "full $(awk -v n="$fb" -v s="$fs" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }') bars/s," \
        "ratio $(awk -v fb="$fb" -v fs="$fs" -v eb="$eb" -v es="$es" 'BEGIN { if (fs > 0 && eb > 0) { x = (fb / fs) / (eb / es); printf "%.2f (target ≥ 0.80: %s)", x, (x >= 0.8 ? "ok" : "MISS") } else print "n/a" }')"
fi

[ "$BAD" -eq 0 ] || { echo "[$TEST_NAME] FAILED: a write round did not store exactly the simulator's bars" >&2; exit 1; }
