#!/usr/bin/env bash
# Requests against the floor: how many /v2/stocks/bars requests the REAL daemon
# makes for a batched backfill, next to the least any client could make,
# ceil(bars / 10,000) (limit=10000 is the most bars one page can carry, across
# symbols). One run per workload:
#
#   d1     200 symbols x 2016-2025 of d1 (one-year runs: 2,000 runs)
#   h1     100 symbols x 2024 of h1 (one-month runs: 1,200 runs)
#   m1     20 symbols x 2024-03 of m1 (one-week runs)
#   mixed  h1 2024 for 50 symbols with data and 50 without (ZZ...: the
#          simulator serves them empty): a busy name next to an illiquid one
#
# Each workload gets a fresh database, the simulator without a rate limit and
# the daemon with the default settings (BACKFILLD_* from the environment are
# passed on, e.g. BACKFILLD_CLAIM_BATCH=100 BACKFILLD_CONCURRENCY=200) and a
# budget that binds, BACKFILLD_RATE_LIMIT=300 (5 requests a second): requests
# are what is scarce only then. With a budget the connections cannot spend
# (rate x seconds a page > connections), the daemon splits requests so that
# their pages are walked side by side, at up to one partial page each.
# requests = the simulator's count of bars requests (a retry would count too).
#
# Env: WORKLOADS (default "d1 h1 m1 mixed"), ROUND_TIMEOUT (s, default 300),
#      KEEP_TMP=1 keeps the temp dir.
# Exactness: the stored bars are compared with `alpaca-sim dump` over the New
# York days enqueued (schema 6: --from 2024-01-01 is 2024-01-01 05:00Z), every
# column both ways, and must be SIP, raw, final, with fetched_at.
#
# Exit: 0 when every workload stored exactly the simulator's bars with every
#       run succeeded and stayed within 1.05 x the floor; 1 otherwise.
. "$(dirname "$0")/lib.sh"

WORKLOADS=${WORKLOADS:-"d1 h1 m1 mixed"}
ROUND_TIMEOUT=${ROUND_TIMEOUT:-300}
[ -x "$BF_BIN" ] && [ -x "$BF_SIM" ] || { echo "build first: make build (missing $BF_BIN or $BF_SIM)" >&2; exit 69; }
snapshot_binaries

pg_start
sim_start --latency-ms 0
export BACKFILLD_RATE_LIMIT=${BACKFILLD_RATE_LIMIT:-300}
export BACKFILLD_PROGRESS_INTERVAL_MS=60000
export BACKFILLD_METRICS_LISTEN=

declare -A R_RUNS R_BARS R_REQ R_FLOOR R_RATIO R_SECS R_NOTE
BAD=0
for w in $WORKLOADS; do
    case $w in
    d1) bench_symbols 200 "$T/syms"; tf=d1; from=2016-01-01; to=2025-12-31 ;;
    h1) bench_symbols 100 "$T/syms"; tf=h1; from=2024-01-01; to=2024-12-31 ;;
    m1) bench_symbols 20 "$T/syms"; tf=m1; from=2024-03-01; to=2024-03-31 ;;
    mixed)
        bench_symbols 50 "$T/syms"
        for ((i = 0; i < 50; i++)); do printf 'ZZ%03dQ\n' "$i"; done >>"$T/syms"
        tf=h1; from=2024-01-01; to=2024-12-31 ;;
    *) echo "WORKLOADS: unknown '$w' (d1 h1 m1 mixed)" >&2; exit 64 ;;
    esac
    case $tf in d1) api=1Day ;; h1) api=1Hour ;; m1) api=1Min ;; esac
    "$PGBIN/dropdb" --if-exists backfilld
    "$PGBIN/createdb" backfilld
    bf migrate >/dev/null
    bf enqueue --symbols-file "$T/syms" --timeframe "$tf" --from "$from" --to "$to" >"$T/enqueue-$w.out"
    sql "VACUUM ANALYZE"
    sim_get /__sim/reset >/dev/null
    t0=$(now_s)
    "$BF_BIN" run --until-idle 2>"$T/$w.log" &
    pid=$!
    PIDS+=("$pid")
    wait_deadline "$pid" "$ROUND_TIMEOUT"
    t1=$(now_s)
    IFS='|' read -r ok notok nbars <<<"$(sql "SELECT count(*) FILTER (WHERE status = 'succeeded'),
        count(*) FILTER (WHERE status <> 'succeeded'), (SELECT count(*) FROM bars) FROM job_runs")"
    req=$(sim_counter 'c["requests"]')
    # Exact: the simulator's bars over the New York days enqueued (schema 6), every column.
    bench_dump "$T/expected-$w.csv" "$api" "$(paste -sd, "$T/syms")" "$from" "$to"
    bench_load_expected "$T/expected-$w.csv" "$tf"
    read -r miss extra off <<<"$(bench_bars_diff)"
    floor=$(((nbars + 9999) / 10000))
    R_RUNS[$w]=$ok R_BARS[$w]=$nbars R_REQ[$w]=$req R_FLOOR[$w]=$floor R_NOTE[$w]=""
    R_RATIO[$w]=$(awk -v a="$req" -v b="$floor" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }')
    R_SECS[$w]=$(awk -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f", z - a }')
    note() { R_NOTE[$w]="${R_NOTE[$w]:+${R_NOTE[$w]}; }$1"; BAD=1; }
    [ "$TIMED_OUT" -eq 1 ] && note "TIMED OUT"
    [ "$notok" -ne 0 ] && note "$notok runs not succeeded"
    [ "$miss$extra$off" = 000 ] || note "NOT EXACT: $miss missing, $extra extra, $off not sip/raw/final"
    awk -v a="$req" -v b="$floor" 'BEGIN { exit !(a <= 1.05 * b) }' || note "over 1.05 x floor"
    log "$w: $ok runs, $nbars bars, $req requests, floor $floor (${R_RATIO[$w]}x) ${R_NOTE[$w]}"
done

echo
echo "backfilld requests vs floor (ceil(bars / 10,000)); simulator without rate limit or latency;"
echo "BACKFILLD_RATE_LIMIT=$BACKFILLD_RATE_LIMIT (a budget that binds)"
# The settings as the daemon sees them: the environment's, else its own defaults.
for k in BACKFILLD_CLAIM_BATCH BACKFILLD_CONCURRENCY BACKFILLD_BATCH_SYMBOLS; do
    if [ -n "${!k:-}" ]; then
        printf '%s=%s ' "$k" "${!k}"
    else
        printf '%s=%s (default) ' "$k" "$("$BF_BIN" --help-config | awk -v k="$k" '$1 == k { print $2 }')"
    fi
done
echo
printf '%-7s %6s %9s %8s %6s %7s %7s  %s\n' workload runs bars requests floor ratio wall_s note
for w in $WORKLOADS; do
    printf '%-7s %6s %9s %8s %6s %7s %7s  %s\n' "$w" "${R_RUNS[$w]:--}" "${R_BARS[$w]:--}" \
        "${R_REQ[$w]:--}" "${R_FLOOR[$w]:--}" "${R_RATIO[$w]:--}" "${R_SECS[$w]:--}" "${R_NOTE[$w]:-}"
done
[ "$BAD" -eq 0 ] || exit 1
