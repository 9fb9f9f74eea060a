#!/usr/bin/env bash
# backfilld side by side with the peer a user would run instead: the official
# Alpaca JS SDK (@alpacahq/alpaca-trade-api 3.1.3) + node-postgres
# (bench/peer-node-sdk/backfill.mjs, copied unchanged from
# the SDK peer shipped with the design docs), on the same simulator and Postgres,
# same workload: N symbols × 2024 of 1Hour bars (SIP, raw).
# 2024 is the New York days (schema 6): [2024-01-01T05:00Z, 2025-01-01T05:00Z),
# for the peer's --start/--end and the simulator's dump alike.
#
# Every case of NS × LATENCIES (default N = 50 and 500 symbols, 20 ms and 250 ms).
# Simulator: --latency-ms L on every response, no rate limit, no faults.
# Contenders, each on a fresh database:
#   peer single   getBarsV2 per symbol (single-symbol endpoint), --concurrency 16
#   peer multi    getMultiBarsV2 over groups of --multi-size 50 symbols
#   backfilld per-symbol   BACKFILLD_BATCH_SYMBOLS=1, BACKFILLD_RATE_LIMIT=1000000
#   backfilld batched      default batching (100), BACKFILLD_RATE_LIMIT=1000000
#   backfilld wide         batched, and as many runs and connections in flight as the
#                          workload has (BACKFILLD_CONCURRENCY=4096,
#                          BACKFILLD_MAX_CONNECTIONS=64): with no rate limit and a slow
#                          server, the defaults (200 runs, 8 connections) are the limit
# backfilld gets `migrate` and `enqueue` first (timed separately), then
# `run --until-idle` is the measured command.
#
# For each: wall seconds of the measured process, the tool's own working
# window, bars in its table, requests the simulator counted, bars/s, CPU
# seconds of the measured process (GNU time -v user+sys, children included)
# and of Postgres (postmaster with the backends it reaped, plus the processes
# it still has, from /proc before and after), peak RSS (GNU time -v; the
# Postgres backends are not included), and whether the
# stored bars are complete and exact: compared row by row (every column) with
# `alpaca-sim dump` of the same range, both ways, plus the number of symbols
# whose bars are all there (a "first symbol only" client shows up there).
#
# After each case, the ceiling: the rows backfilld stored, written again into
# the emptied bars table by one raw binary COPY, sorted by key and then in the
# order backfilld's pages arrived.
#
# After the cases, one summary: per case the best SDK mode and the best
# backfilld mode by wall time, and the ratios of their wall and their CPU
# (process + Postgres).
#
# Env: NS (symbol counts, default "50 500"; N=K is short for NS=K),
#      LATENCIES (simulator latency per response in ms, default "20 250";
#      LATENCY_MS=L is short for LATENCIES=L), ROUND_TIMEOUT (seconds, default 300),
#      CONTENDERS (default "peer-single peer-multi bf-per-symbol bf-batched bf-wide"),
#      KEEP_TMP=1 keeps the temp dir (logs <contender>.log/.out).
# Exit: 0 when every contender ran to completion; 1 when any failed, timed
#       out, or backfilld stored anything but the exact expected bars. A peer
#       that stores incomplete or wrong data is a finding, reported in the
#       table, not a failure of this script.
. "$(dirname "$0")/lib.sh"

NS=${NS:-${N:-50 500}}
LATENCIES=${LATENCIES:-${LATENCY_MS:-20 250}}
ROUND_TIMEOUT=${ROUND_TIMEOUT:-300}
CONTENDERS=${CONTENDERS:-"peer-single peer-multi bf-per-symbol bf-batched bf-wide"}
PEER_DIR=$BENCH_DIR/peer-node-sdk
# The range `enqueue --from 2024-01-01 --to 2024-12-31` covers (schema 6: New
# York trading days): [2024-01-01 05:00Z, 2025-01-01 05:00Z). The peer is given
# the same instants, and the dump is of the same range.
START=$(ny 2024-01-01)
END=$(ny_end 2024-12-31)   # inclusive, as the API's end: 2025-01-01T04:59:59Z

for n in $NS; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 10000 ] || { echo "NS: '$n' is not an integer in 1..10000" >&2; exit 64; }
done
for l in $LATENCIES; do
    [[ "$l" =~ ^[0-9]+$ ]] || { echo "LATENCIES: '$l' is not a non-negative integer" >&2; exit 64; }
done
for c in $CONTENDERS; do
    [[ "$c" =~ ^(peer-single|peer-multi|bf-per-symbol|bf-batched|bf-wide)$ ]] ||
        { echo "CONTENDERS: unknown '$c'" >&2; exit 64; }
done
[ -x "$BF_BIN" ] && [ -x "$BF_SIM" ] || { echo "build first: make build (missing $BF_BIN or $BF_SIM)" >&2; exit 69; }
command -v node >/dev/null && command -v npm >/dev/null ||
    { echo "node and npm are needed for the peer (Debian: apt-get install nodejs npm)" >&2; exit 69; }
if [ -x /usr/bin/time ]; then
    RSS_HOW="GNU time -v (max RSS of the measured process tree)"
else
    RSS_HOW="VmHWM of the measured process sampled every 50 ms (/usr/bin/time missing: apt-get install time)"
fi

# The peer's dependencies, once (node_modules/ is git-ignored).
if [ ! -d "$PEER_DIR/node_modules/@alpacahq/alpaca-trade-api" ] || [ ! -d "$PEER_DIR/node_modules/pg" ]; then
    log "installing the peer's dependencies into $PEER_DIR/node_modules (npm install)"
    (cd "$PEER_DIR" && npm install --no-package-lock --no-audit --no-fund --loglevel=error) >&2
fi
SDK_VERSION=$(node -p "require('$PEER_DIR/node_modules/@alpacahq/alpaca-trade-api/package.json').version")
PG_VERSION=$(node -p "require('$PEER_DIR/node_modules/pg/package.json').version")

# Snapshot the binaries: a rebuild during the benchmark must not change them.
snapshot_binaries

pg_start
# node-postgres takes the unix-socket directory from the URI's host parameter.
PEER_DB="postgresql://postgres@/backfilld?host=$T/pg&port=${PG_PORT:-5432}"

export BACKFILLD_RATE_LIMIT=1000000
export BACKFILLD_PROGRESS_INTERVAL_MS=60000
export BACKFILLD_METRICS_LISTEN=
export BACKFILLD_LOG_LEVEL=${BACKFILLD_LOG_LEVEL:-info}

fresh_db() {
    "$PGBIN/dropdb" --if-exists backfilld
    "$PGBIN/createdb" backfilld
    bench_load_expected "$T/expected.csv" h1
}

# For measure without GNU time: the peak RSS so far of $pid, into hwm.
sample_hwm() {
    local v
    v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    [ -z "$v" ] || hwm=$v
}

# For measure without GNU time: also the CPU so far of $pid, into cpu.
sample_hwm_cpu() {
    local c
    sample_hwm
    c=$(proc_cpu_s "$pid" all) && [ -n "$c" ] && cpu=$c
    return 0
}

# measure NAME cmd... : runs cmd under a timeout; sets M_RC, M_WALL, M_RSS_MB,
# M_CPU (the process's user+sys CPU seconds, children included) and M_PGCPU
# (Postgres's CPU seconds meanwhile) (M_RC 124 = timed out).
# stdout → $T/NAME.out, stderr → $T/NAME.log.
measure() {
    local name=$1 t0 t1 pid hwm=0 cpu=0 pg0
    shift
    pg0=$(pg_cpu_s)
    t0=$(now_s)
    if [ -x /usr/bin/time ]; then
        M_RC=0
        /usr/bin/time -v -o "$T/$name.time" timeout -k 5 "$ROUND_TIMEOUT" "$@" \
            >"$T/$name.out" 2>"$T/$name.log" || M_RC=$?
        t1=$(now_s)
        hwm=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$T/$name.time")
        cpu=$(awk -F': ' '/User time \(seconds\)|System time \(seconds\)/ { t += $2 } END { printf "%.2f", t }' "$T/$name.time")
    else
        "$@" >"$T/$name.out" 2>"$T/$name.log" &
        pid=$!
        PIDS+=("$pid")
        WAIT_TICK=0.05 wait_deadline "$pid" "$ROUND_TIMEOUT" sample_hwm_cpu
        M_RC=$WAIT_RC
        [ "$TIMED_OUT" -eq 0 ] || M_RC=124
        t1=$(now_s)
    fi
    M_WALL=$(awk -v a="$t0" -v z="$t1" 'BEGIN { printf "%.2f", z - a }')
    M_PGCPU=$(awk -v a="$pg0" -v z="$(pg_cpu_s)" 'BEGIN { printf "%.2f", z - a }')
    M_CPU=$cpu
    M_RSS_MB=$(awk -v k="${hwm:-0}" 'BEGIN { if (k > 0) printf "%.0f", k / 1024; else print "?" }')
}

# diff_table TABLE → "missing extra exact_symbols stored_symbols": rows of
# expected_bars not in TABLE, rows of TABLE not in expected_bars (all columns
# compared), symbols whose stored rows equal the expected ones exactly, and
# symbols with any stored row.
diff_table() {
    local t=$1 cols="symbol, timeframe, ts, open, high, low, close, volume, trade_count, vwap"
    sql "WITH missing AS (SELECT $cols FROM expected_bars EXCEPT SELECT $cols FROM $t),
              extra   AS (SELECT $cols FROM $t EXCEPT SELECT $cols FROM expected_bars),
              bad AS (SELECT symbol FROM missing UNION SELECT symbol FROM extra)
         SELECT (SELECT count(*) FROM missing) || ' ' || (SELECT count(*) FROM extra) || ' ' ||
                (SELECT count(DISTINCT symbol) FROM expected_bars WHERE symbol NOT IN (SELECT symbol FROM bad))
                || ' ' || (SELECT count(DISTINCT symbol) FROM $t)"
}

declare -A R_WALL R_INNER R_PREP R_BARS R_REQ R_BPS R_RSS R_MISS R_EXTRA R_SYMS R_NOTE R_CPU R_PGCPU
declare -A S_LINE
BAD=0
CASES=()

# run_case N LATENCY_MS: every contender on N symbols at that latency; prints its table.
run_case() {
local N=$1 LATENCY_MS=$2 c
# Symbols: the first N of lib.sh's 50 large caps, or S000A... beyond 50.
if [ "$N" -le 50 ]; then
    tr ',' '\n' <<<"$SYMBOLS50" | head -n "$N" >"$T/symbols.txt"
else
    bench_symbols "$N" "$T/symbols.txt"
fi
SYMLIST=$(paste -sd, "$T/symbols.txt")
[ -z "${SIM_PID:-}" ] || sim_stop
sim_start --latency-ms "$LATENCY_MS" --rate 0
bench_dump "$T/expected.csv" 1Hour "$SYMLIST" 2024-01-01 2024-12-31
EXPECTED_BARS=$(wc -l <"$T/expected.csv")
log "N=$N symbols × 2024 h1 ($EXPECTED_BARS bars expected), simulator latency $LATENCY_MS ms, no rate limit, temp dir $T"

for c in $CONTENDERS; do
    fresh_db
    sim_get /__sim/reset >/dev/null
    R_NOTE[$c]=""
    R_PREP[$c]="-"
    table=peer_bars
    case $c in
    peer-*)
        mode=${c#peer-}
        measure "$c" node "$PEER_DIR/backfill.mjs" --data-url "http://127.0.0.1:$SIM_PORT" --db "$PEER_DB" \
            --symbols-file "$T/symbols.txt" --timeframe 1Hour --start "$START" --end "$END" \
            --concurrency 16 --mode "$mode" --multi-size 50
        # the peer's last stdout line: {"peer":"node-sdk",...,"failed":F,"seconds":S,...}
        read -r R_INNER[$c] pfailed <<<"$(python3 -c "
import json, sys
s = [l for l in open(sys.argv[1]) if l.startswith('{\"peer\"')]
o = json.loads(s[-1]) if s else {}
print(o.get('seconds', '-'), o.get('failed', '?'))" "$T/$c.out")"
        if [ "$M_RC" -ne 0 ] || [ "$pfailed" != 0 ]; then
            R_NOTE[$c]="exit $M_RC, failed units $pfailed: $(head -c 200 "$T/$c.log" | tr '\n' ' ')"
            BAD=1
        fi
        sql "SELECT 1 FROM peer_bars LIMIT 0" >/dev/null 2>&1 ||
            sql "CREATE TABLE peer_bars (symbol text, timeframe text, ts timestamptz, open float8,
                   high float8, low float8, close float8, volume bigint, trade_count bigint, vwap float8)"
        ;;
    bf-*)
        table=bars
        t0=$(now_s)
        bf migrate >"$T/migrate-$c.out"
        bf enqueue --symbols-file "$T/symbols.txt" --timeframe h1 --from 2024-01-01 --to 2024-12-31 \
            >"$T/enqueue-$c.out"
        R_PREP[$c]=$(awk -v a="$t0" -v z="$(now_s)" 'BEGIN { printf "%.2f", z - a }')
        batch=100 wide=()
        [ "$c" = bf-per-symbol ] && batch=1
        [ "$c" = bf-wide ] && wide=(BACKFILLD_CONCURRENCY=4096 BACKFILLD_MAX_CONNECTIONS=64)
        measure "$c" env BACKFILLD_BATCH_SYMBOLS=$batch "${wide[@]}" "$BF_BIN" run --until-idle
        IFS='|' read -r ok notok inner <<<"$(sql "
            SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status <> 'succeeded'),
                   coalesce(round(extract(epoch FROM max(finished_at) - min(started_at))::numeric, 2)::text, '-')
              FROM job_runs")"
        R_INNER[$c]=$inner
        if [ "$M_RC" -ne 0 ] || [ "$notok" -ne 0 ] || [ "$ok" -ne $((N * 12)) ]; then
            R_NOTE[$c]="exit $M_RC, $ok/$((N * 12)) runs succeeded"
            BAD=1
            print_statuses
        fi
        ;;
    esac
    [ "$M_RC" = 124 ] && R_NOTE[$c]="TIMED OUT after ${ROUND_TIMEOUT}s; ${R_NOTE[$c]}"
    R_WALL[$c]=$M_WALL
    R_CPU[$c]=$M_CPU
    R_PGCPU[$c]=$M_PGCPU
    R_RSS[$c]=$M_RSS_MB
    R_BARS[$c]=$(sql "SELECT count(*) FROM $table")
    R_REQ[$c]=$(sim_counter 'c["requests"]')
    non200=$(sim_counter 'c["requests"] - c["by_status"]["200"]')
    [ "$non200" -ne 0 ] && R_NOTE[$c]="${R_NOTE[$c]:+${R_NOTE[$c]}; }$non200 non-200 answers"
    R_BPS[$c]=$(awk -v n="${R_BARS[$c]}" -v s="$M_WALL" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "-" }')
    read -r miss extra exact_syms stored_syms <<<"$(diff_table "$table")"
    if [ "$table" = bars ]; then
        # schema 6: also the series and state of every stored bar (SIP, raw, final, fetched_at)
        off=$(sql "SELECT count(*) FROM bars WHERE (feed, adjustment, final) IS DISTINCT FROM ('sip', 'raw', true) OR fetched_at IS NULL")
        [ "$off" = 0 ] || { R_NOTE[$c]="${R_NOTE[$c]:+${R_NOTE[$c]}; }$off bars not sip/raw/final"; BAD=1; }
    fi
    R_MISS[$c]=$miss
    R_EXTRA[$c]=$extra
    R_SYMS[$c]="$exact_syms/$N ($stored_syms stored)"
    if [ "${R_MISS[$c]}" != 0 ] || [ "${R_EXTRA[$c]}" != 0 ]; then
        R_NOTE[$c]="${R_NOTE[$c]:+${R_NOTE[$c]}; }NOT EXACT"
        case $c in bf-*) BAD=1 ;; esac
        echo "[$TEST_NAME] $c: per-symbol stored vs expected (first 10 symbols that differ):" >&2
        psql -X -c "SELECT e.symbol, e.n AS expected, coalesce(s.n, 0) AS stored
                      FROM (SELECT symbol, count(*) n FROM expected_bars GROUP BY 1) e
                      LEFT JOIN (SELECT symbol, count(*) n FROM $table GROUP BY 1) s USING (symbol)
                     WHERE s.n IS DISTINCT FROM e.n ORDER BY 1 LIMIT 10" >&2
    fi
    log "$c: ${R_BARS[$c]} bars in ${R_WALL[$c]}s, ${R_REQ[$c]} requests, missing ${R_MISS[$c]}, extra ${R_EXTRA[$c]} ${R_NOTE[$c]}"
done

# The ceiling: the rows backfilld stored (exact, checked above), written again into the
# same, emptied bars table by one raw binary COPY, as fast as this Postgres takes them.
# No client that stores these bars here can beat its wall; the SDK's wall over it is the
# most wall_x this machine allows.
#
# The same rows once more in the order backfilld's pages arrived (fetched_at is one
# instant per response; within a response, symbol and time), also by one raw COPY:
# what Postgres spends on these rows in the order any parallel fetch of many series
# delivers them. Sorted by key, every insert lands on the B-tree's rightmost leaf
# (its fast path); in arrival order each one descends the tree.
R_CEIL_WALL="-" R_CEIL_PG="-" R_ARR_WALL="-" R_ARR_PG="-"
if [ -n "${R_WALL[bf-batched]:-}${R_WALL[bf-wide]:-}${R_WALL[bf-per-symbol]:-}" ] &&
    [ "$(sql "SELECT count(*) FROM bars")" = "$EXPECTED_BARS" ]; then
    psql -XAtq -v ON_ERROR_STOP=1 -c "\\copy (SELECT * FROM bars ORDER BY symbol, ts) TO '$T/ceiling.bin' (FORMAT binary)"
    psql -XAtq -v ON_ERROR_STOP=1 -c "\\copy (SELECT * FROM bars ORDER BY fetched_at, symbol, ts) TO '$T/arrival.bin' (FORMAT binary)"
    for what in ceiling arrival; do
        sql "TRUNCATE bars; CHECKPOINT"
        measure "$what" psql -XAtq -v ON_ERROR_STOP=1 -c "\\copy bars FROM '$T/$what.bin' (FORMAT binary)"
        if [ "$M_RC" -eq 0 ] && [ "$(sql "SELECT count(*) FROM bars")" = "$EXPECTED_BARS" ]; then
            if [ "$what" = ceiling ]; then R_CEIL_WALL=$M_WALL R_CEIL_PG=$M_PGCPU; else R_ARR_WALL=$M_WALL R_ARR_PG=$M_PGCPU; fi
            log "$what: raw binary COPY of the same $EXPECTED_BARS rows into bars: ${M_WALL}s, Postgres ${M_PGCPU} CPU-s"
        else
            log "$what: raw COPY failed (rc $M_RC): $(head -c 300 "$T/$what.log")"
        fi
    done
fi

echo
echo "backfilld vs the official Alpaca JS SDK peer: $N symbols × 2024 1Hour (SIP, raw), $EXPECTED_BARS bars expected"
echo "alpaca-sim --latency-ms $LATENCY_MS, no rate limit; Postgres 15 local (fsync off); $(nproc) cores shared by all"
echo "peer: node $(node --version), @alpacahq/alpaca-trade-api $SDK_VERSION, pg $PG_VERSION, --concurrency 16, multi-size 50, default --batch 1000"
echo "$("$BF_BIN" --version 2>/dev/null | head -1) (build/backfilld built $BF_BUILT, copied at start), BACKFILLD_RATE_LIMIT=1000000, other settings default"
echo
printf '%-14s %7s %7s %6s %8s %8s %8s %7s %7s %7s %8s %6s  %-16s %s\n' \
    contender wall_s inner_s prep_s bars requests bars/s cpu_s pg_s rss_MB missing extra exact_symbols note
for c in $CONTENDERS; do
    printf '%-14s %7s %7s %6s %8s %8s %8s %7s %7s %7s %8s %6s  %-16s %s\n' "$c" "${R_WALL[$c]:--}" \
        "${R_INNER[$c]:--}" "${R_PREP[$c]:--}" "${R_BARS[$c]:--}" "${R_REQ[$c]:--}" "${R_BPS[$c]:--}" \
        "${R_CPU[$c]:--}" "${R_PGCPU[$c]:--}" \
        "${R_RSS[$c]:--}" "${R_MISS[$c]:--}" "${R_EXTRA[$c]:--}" "${R_SYMS[$c]:--}" "${R_NOTE[$c]:-}"
done
echo "  wall_s = the measured process (peer: node backfill.mjs; backfilld: run --until-idle), start-up and exit included"
echo "  inner_s = the tool's own window (peer: its reported seconds; backfilld: max(finished_at) - min(started_at))"
echo "  prep_s = backfilld migrate + enqueue before the run (not in wall_s); bars/s = bars / wall_s"
echo "  cpu_s = user+sys CPU seconds of the measured process (GNU time, children included); pg_s = Postgres's"
echo "          CPU seconds meanwhile (postmaster, reaped and live backends and workers, /proc)"
echo "  rss_MB = peak RSS by $RSS_HOW"
echo "  missing/extra = rows of the simulator's dump absent from the table / rows of the table not in the dump (all columns)"
echo "  exact_symbols = symbols whose stored bars equal the dump exactly (symbols with any bar stored)"
echo "ceiling: one raw binary COPY of the same rows into the same emptied bars table: wall ${R_CEIL_WALL}s, Postgres ${R_CEIL_PG} CPU-s"
echo "arrival: the same, in the order backfilld's pages arrived: wall ${R_ARR_WALL}s, Postgres ${R_ARR_PG} CPU-s"
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && a != "-" && b != "-" && b > 0) printf "%.2fx", a / b; else print "n/a" }'
}
for p in peer-single peer-multi; do
    for b in bf-per-symbol bf-batched bf-wide; do
        [ -n "${R_WALL[$p]:-}" ] && [ -n "${R_WALL[$b]:-}" ] || continue
        echo "  wall $p / $b = $(ratio "${R_WALL[$p]}" "${R_WALL[$b]}"); requests $(ratio "${R_REQ[$p]}" "${R_REQ[$b]}")"
    done
done
# The case's summary line: the best (least wall) of each side.
local bp="" bb="" x
for x in peer-single peer-multi; do
    [ -n "${R_WALL[$x]:-}" ] || continue
    { [ -z "$bp" ] || awk -v a="${R_WALL[$x]}" -v b="${R_WALL[$bp]}" 'BEGIN { exit !(a < b) }'; } && bp=$x
done
for x in bf-per-symbol bf-batched bf-wide; do
    [ -n "${R_WALL[$x]:-}" ] || continue
    { [ -z "$bb" ] || awk -v a="${R_WALL[$x]}" -v b="${R_WALL[$bb]}" 'BEGIN { exit !(a < b) }'; } && bb=$x
done
if [ -n "$bp" ] && [ -n "$bb" ]; then
    S_LINE["$N $LATENCY_MS"]=$(printf '%6s %7s  %-12s %7s %7s %7s  %-14s %7s %7s %7s  %9s %9s  %7s %7s %9s %9s  %7s %7s' "$N" "$LATENCY_MS" \
        "${bp#peer-}" "${R_WALL[$bp]}" "${R_CPU[$bp]}" "${R_PGCPU[$bp]}" \
        "$bb" "${R_WALL[$bb]}" "${R_CPU[$bb]}" "${R_PGCPU[$bb]}" \
        "$(ratio "${R_WALL[$bp]}" "${R_WALL[$bb]}")" \
        "$(ratio "$(awk -v a="${R_CPU[$bp]}" -v b="${R_PGCPU[$bp]}" 'BEGIN { print a + b }')" \
                 "$(awk -v a="${R_CPU[$bb]}" -v b="${R_PGCPU[$bb]}" 'BEGIN { print a + b }')")" \
        "$R_CEIL_WALL" "$R_CEIL_PG" "$(ratio "${R_WALL[$bp]}" "$R_CEIL_WALL")" \
        "$(ratio "$(awk -v a="${R_CPU[$bp]}" -v b="${R_PGCPU[$bp]}" 'BEGIN { print a + b }')" "$R_CEIL_PG")" \
        "$R_ARR_WALL" "$R_ARR_PG")
else
    S_LINE["$N $LATENCY_MS"]=$(printf '%6s %7s  (a side has no result)' "$N" "$LATENCY_MS")
fi

}

for n in $NS; do
    for l in $LATENCIES; do
        run_case "$n" "$l"
        CASES+=("$n $l")
    done
done

echo
echo "summary: best SDK mode vs best backfilld mode by wall time, per case (cpu = measured process + Postgres)"
printf '%6s %7s  %-12s %7s %7s %7s  %-14s %7s %7s %7s  %9s %9s  %7s %7s %9s %9s  %7s %7s\n' N lat_ms sdk_best wall_s cpu_s pg_s bf_best wall_s cpu_s pg_s wall_x cpu_x ceil_s ceil_pg max_wall_x max_cpu_x arr_s arr_pg
for cs in "${CASES[@]}"; do
    echo "${S_LINE[$cs]}"
done
echo "  wall_x = SDK wall ÷ backfilld wall; cpu_x = SDK (node + Postgres) CPU ÷ backfilld (daemon + Postgres) CPU"
echo "  ceil_s, ceil_pg = the ceiling's wall and Postgres CPU (one raw binary COPY of the same rows into the same table)"
echo "  max_wall_x = SDK wall ÷ ceiling wall, max_cpu_x = SDK CPU ÷ ceiling's Postgres CPU: the most any client"
echo "          storing these rows in this table could reach on this machine"
echo "  arr_s, arr_pg = the same raw COPY with the rows in the order backfilld's pages arrived: Postgres's cost of"
echo "          these rows as a parallel fetch delivers them (each insert descends the key's B-tree)"
echo "  targets (issue #11): wall_x ≥ 5, cpu_x ≥ 5"

[ "$BAD" -eq 0 ] || { echo "[$TEST_NAME] FAILED: a contender failed, timed out, or backfilld's data is not exact" >&2; exit 1; }
