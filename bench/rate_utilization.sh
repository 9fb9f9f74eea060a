#!/usr/bin/env bash
# Rate-limit utilisation of the REAL daemon against a simulator that enforces a
# scaled free plan: how many requests a backfill needs, how long it takes, and
# how much of the request budget the daemon actually uses, per-symbol vs
# batched.
#
# Workload per round: SYMBOLS generated symbols (S000A, S001A, ...) × 2024, as
# h1 (one-month chunks → 12 runs per symbol) or d1 (one-year chunks → 1 run per
# symbol). Four rounds: {h1, d1} × {per-symbol (BACKFILLD_BATCH_SYMBOLS=1),
# batched (the default, 100)}. Simulator: --rate 20 --burst 20 (a token bucket
# of 20 requests/s, 100× the free plan's 200/min would be 3.3/s; 20/s keeps the
# rounds short); daemon: BACKFILLD_RATE_LIMIT=1200 (requests/min = 20/s).
#
# The window is first request to last request, from the daemon's debug log
# ("page fetched" / "rate limited" / "page retry" lines, ms timestamps), so
# start-up, migration and the last COPY are not counted. Utilisation =
# accepted requests / (20 × seconds + 1): a limiter that spends its budget
# perfectly sends one request every 50 ms, i.e. 20 × seconds + 1 requests in a
# window that starts and ends with a request. 429s are counted separately
# (they are requests the budget did not allow).
#
# Then the three-host rounds (issue #11): HOSTS daemons (default 3) share one
# budget of HOST_RATE requests/s (default 10, BACKFILLD_RATE_LIMIT = 600/min)
# through rate_limits, per-symbol, HOST_SYMBOLS symbols (default 300) × 2024 d1
# = 300 runs of one request each, the simulator answering after HOST_LATENCY_MS
# (default 0), against each simulator mode: "window" = --rate-window
# 1s:HOST_RATE (a fixed window per epoch second, 429 without headers, no
# bucket), "bucket" = --rate HOST_RATE --burst HOST_RATE. Printed: the 429s as
# a share of all requests, and the budget used = accepted requests /
# (HOST_RATE × seconds + 1) over first to last request of all hosts' logs.
# With BF_BIN_BASE=path/to/older/backfilld the same rounds also run that
# binary first ("before"), so before and after are measured in one run.
#
# Env: SYMBOLS (default 500), RATE (simulator requests/s, default 20; the daemon
#      gets RATE × 60 per minute), ROUNDS (default "h1:per-symbol h1:batched
#      d1:per-symbol d1:batched"; "" for none), HOST_ROUNDS (default "window
#      bucket"; "" for none), HOSTS, HOST_RATE, HOST_SYMBOLS, HOST_LATENCY_MS, BF_BIN_BASE,
#      ROUND_TIMEOUT (seconds, default 420), KEEP_TMP=1 keeps the temp dir
#      (daemon logs <tf>-<mode>.log, <binary>-<mode>-h<i>.log).
# Exactness: every round's bars are compared with `alpaca-sim dump` of the
# workload over the New York days of 2024 (schema 6: [2024-01-01 05:00Z,
# 2025-01-01 05:00Z)), every column both ways, SIP, raw, final, fetched_at.
# Exit: 0 when every round finished with every run succeeded and exactly the
#       simulator's bars stored; 1 otherwise.
. "$(dirname "$0")/lib.sh"

SYMBOLS=${SYMBOLS:-500}
RATE=${RATE:-20}
ROUNDS=${ROUNDS-"h1:per-symbol h1:batched d1:per-symbol d1:batched"}
ROUND_TIMEOUT=${ROUND_TIMEOUT:-420}
HOST_ROUNDS=${HOST_ROUNDS-"window bucket"}
HOSTS=${HOSTS:-3}
HOST_RATE=${HOST_RATE:-10}
HOST_SYMBOLS=${HOST_SYMBOLS:-300}
HOST_LATENCY_MS=${HOST_LATENCY_MS:-0}
HOST_DAEMON_RATE=${HOST_DAEMON_RATE:-$((HOST_RATE * 60))}
BF_BIN_BASE=${BF_BIN_BASE:-}

[[ "$SYMBOLS" =~ ^[1-9][0-9]*$ ]] && [ "$SYMBOLS" -le 10000 ] ||
    { echo "SYMBOLS must be an integer in 1..10000" >&2; exit 64; }
[[ "$RATE" =~ ^[1-9][0-9]*$ ]] || { echo "RATE must be a positive integer" >&2; exit 64; }
for r in $ROUNDS; do
    [[ "$r" =~ ^(h1|d1):(per-symbol|batched)$ ]] ||
        { echo "ROUNDS: '$r' is not h1|d1:per-symbol|batched" >&2; exit 64; }
done
for r in $HOST_ROUNDS; do
    [[ "$r" =~ ^(window|bucket)$ ]] || { echo "HOST_ROUNDS: '$r' is not window|bucket" >&2; exit 64; }
done
[[ "$HOST_LATENCY_MS" =~ ^[0-9]+$ ]] || { echo "HOST_LATENCY_MS must be a number" >&2; exit 64; }
for v in HOSTS HOST_RATE HOST_SYMBOLS HOST_DAEMON_RATE; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer" >&2; exit 64; }
done
[ -x "$BF_BIN" ] && [ -x "$BF_SIM" ] || { echo "build first: make build (missing $BF_BIN or $BF_SIM)" >&2; exit 69; }
[ -z "$BF_BIN_BASE" ] || [ -x "$BF_BIN_BASE" ] || { echo "BF_BIN_BASE: $BF_BIN_BASE is not executable" >&2; exit 69; }


# Snapshot the binaries: a rebuild during the benchmark must not change them.
snapshot_binaries
BASE_SHOWN=$BF_BIN_BASE
if [ -n "$BF_BIN_BASE" ]; then
    cp "$BF_BIN_BASE" "$T/bin/backfilld-base"
    BF_BIN_BASE=$T/bin/backfilld-base
fi

bench_symbols "$SYMBOLS" "$T/symbols.txt"
SYMLIST=$(paste -sd, "$T/symbols.txt")

pg_start
sim_start --rate "$RATE" --burst "$RATE" --latency-ms 0

export BACKFILLD_RATE_LIMIT=$((RATE * 60))
export BACKFILLD_PROGRESS_INTERVAL_MS=60000
export BACKFILLD_METRICS_LISTEN=
export BACKFILLD_LOG_LEVEL=debug   # "page fetched" lines time every request

declare -A EXPECTED # timeframe → bars the simulator serves for the workload
# expected_bars TF [SYMLIST] [TAG]: the count of the simulator's bars for SYMLIST
# (default the workload's) × 2024 as enqueued (New York days, schema 6); the
# dump is kept in $T/expected-TAG.csv for check_exact.
expected_bars() {
    local tf=$1 syms=${2:-$SYMLIST} tag=${3:-$1} api
    [ "$tf" = h1 ] && api=1Hour || api=1Day
    if [ -z "${EXPECTED[$tag]:-}" ]; then
        bench_dump "$T/expected-$tag.csv" "$api" "$syms" 2024-01-01 2024-12-31
        EXPECTED[$tag]=$(wc -l <"$T/expected-$tag.csv")
    fi
    echo "${EXPECTED[$tag]}"
}
# check_exact TF TAG: "" when bars equal the dump of expected_bars TF … TAG
# (every column, both ways; SIP, raw, final, fetched_at), else what differs.
check_exact() {
    local miss extra off
    bench_load_expected "$T/expected-$2.csv" "$1"
    read -r miss extra off <<<"$(bench_bars_diff)"
    sql "DROP TABLE expected_bars" >/dev/null
    [ "$miss$extra$off" = 000 ] || echo "NOT EXACT: $miss missing, $extra extra, $off not sip/raw/final"
}

# Window and request counts from a daemon log: prints
# "first_epoch last_epoch seconds n_lines" over the request-outcome lines.
log_window() {
    python3 - "$@" <<'PY'
import json, sys, datetime as dt
ts = []
for line in (l for f in sys.argv[1:] for l in open(f, errors="replace")):
    i = line.find("{")
    if i < 0:
        continue
    try:
        o = json.loads(line[i:])
    except ValueError:
        continue
    if o.get("msg") in ("page fetched", "rate limited, waiting", "page retry"):
        t = dt.datetime.strptime(o["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
        ts.append(t.timestamp())
if not ts:
    print("0 0 0 0")
else:
    print(f"{min(ts):.3f} {max(ts):.3f} {max(ts) - min(ts):.3f} {len(ts)}")
PY
}

[ -n "$ROUNDS" ] && log "SYMBOLS=$SYMBOLS, simulator --rate $RATE --burst $RATE, BACKFILLD_RATE_LIMIT=$BACKFILLD_RATE_LIMIT/min, temp dir $T"
declare -A R_RUNS R_BARS R_REQ R_429 R_SECS R_SIMS R_UTIL R_DONE R_BPS R_WALL R_NOTE
BAD=0

for round in $ROUNDS; do
    tf=${round%%:*}
    mode=${round#*:}
    name="$tf-$mode"
    per_sym=12
    [ "$tf" = d1 ] && per_sym=1
    want_runs=$((SYMBOLS * per_sym))
    want_bars=$(expected_bars "$tf")

    # A fresh database per round: no bars, no runs, no rate_limits row.
    "$PGBIN/dropdb" --if-exists backfilld
    "$PGBIN/createdb" backfilld
    bf migrate >"$T/migrate-$name.out"
    bf enqueue --symbols-file "$T/symbols.txt" --timeframe "$tf" --from 2024-01-01 --to 2024-12-31 \
        >"$T/enqueue-$name.out"
    queued=$(sql "SELECT count(*) FROM job_runs WHERE status = 'queued'")
    if [ "$queued" != "$want_runs" ]; then
        echo "[$TEST_NAME] $name: expected $want_runs queued runs, found $queued" >&2
        BAD=1
        R_NOTE[$name]="bad enqueue ($queued queued)"
        continue
    fi
    sql "VACUUM ANALYZE"
    sim_get /__sim/reset >/dev/null                             # counters
    sim_get "/__sim/set?rate=$RATE&burst=$RATE" >/dev/null      # a full bucket again

    batch_env=()
    [ "$mode" = per-symbol ] && batch_env=(BACKFILLD_BATCH_SYMBOLS=1)
    t0=$(now_s)
    env "${batch_env[@]}" "$BF_BIN" run --until-idle 2>"$T/$name.log" &
    pid=$!
    PIDS+=("$pid")
    WAIT_TICK=0.2 wait_deadline "$pid" "$ROUND_TIMEOUT"
    timed_out=$TIMED_OUT rc=$WAIT_RC
    t1=$(now_s)

    read -r first last secs nlines <<<"$(log_window "$T/$name.log")"
    IFS='|' read -r ok notok nbars last_done <<<"$(sql "
        SELECT count(*) FILTER (WHERE status = 'succeeded'),
               count(*) FILTER (WHERE status <> 'succeeded'),
               (SELECT count(*) FROM bars),
               coalesce(extract(epoch FROM max(finished_at)), 0)
          FROM job_runs")"
    sim_get /__sim/counters >"$T/counters-$name.json"
    IFS=' ' read -r req r200 r429 sim_secs <<<"$(python3 -c "
import json, sys
c = json.load(open(sys.argv[1]))
ps = [s for s, n in c['per_second'] if n]
span = (max(ps) - min(ps) + 1) if ps else 0
print(c['requests'], c['by_status'].get('200', 0), c['by_status'].get('429', 0), span)" "$T/counters-$name.json")"

    R_RUNS[$name]=$ok
    R_BARS[$name]=$nbars
    R_REQ[$name]=$req
    R_429[$name]=$r429
    R_SECS[$name]=$secs
    R_SIMS[$name]=$sim_secs
    R_UTIL[$name]=$(awk -v n="$r200" -v s="$secs" -v r="$RATE" \
        'BEGIN { if (n > 0) printf "%.1f%%", 100 * n / (r * s + 1); else print "-" }')
    # bars/s over first request → last run completed (the writes that follow the last request count)
    R_DONE[$name]=$(awk -v a="$first" -v z="$last_done" 'BEGIN { if (a > 0 && z > a) printf "%.2f", z - a; else print "-" }')
    R_BPS[$name]=$(awk -v n="$nbars" -v s="${R_DONE[$name]}" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "-" }')
    R_WALL[$name]=$(awk -v a="$t0" -v z="$t1" 'BEGIN { printf "%.2f", z - a }')
    R_NOTE[$name]=""
    note() { R_NOTE[$name]="${R_NOTE[$name]:+${R_NOTE[$name]}; }$1"; BAD=1; }
    [ "$timed_out" -eq 1 ] && note "TIMED OUT after ${ROUND_TIMEOUT}s"
    [ "$timed_out" -eq 0 ] && [ "$rc" -ne 0 ] && note "daemon exit $rc"
    [ "$nlines" != "$req" ] && R_NOTE[$name]="${R_NOTE[$name]:+${R_NOTE[$name]}; }log saw $nlines of $req requests"
    [ "$nbars" != "$want_bars" ] && note "bars $nbars != expected $want_bars"
    exact=$(check_exact "$tf" "$tf")
    [ -z "$exact" ] || note "$exact"
    if [ "$notok" -ne 0 ] || [ "$ok" != "$want_runs" ]; then
        note "$notok runs not succeeded"
        echo "[$TEST_NAME] $name: $ok of $want_runs runs succeeded; statuses:" >&2
        print_statuses
    fi
    log "$name: $ok/$want_runs runs, $nbars bars, $req requests ($r429 × 429) in ${secs}s, util ${R_UTIL[$name]} ${R_NOTE[$name]}"
done

ratio() { # ratio NUM DEN
    awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && a != "-" && b != "-" && b > 0) printf "%.1fx", a / b; else print "n/a" }'
}

if [ -n "$ROUNDS" ]; then
echo
echo "backfilld rate-limit utilisation: $SYMBOLS symbols × 2024 (h1: 12 monthly runs/symbol, d1: 1 yearly run/symbol)"
echo "alpaca-sim --rate $RATE --burst $RATE (token bucket, 429 when empty), no latency; BACKFILLD_RATE_LIMIT=$BACKFILLD_RATE_LIMIT/min;"
echo "per-symbol = BACKFILLD_BATCH_SYMBOLS=1, batched = default (100); other settings default; Postgres 15 local (fsync off), $(nproc) cores"
echo "$("$BF_BIN" --version 2>/dev/null | head -1) (build/backfilld built $BF_BUILT, copied at start)"
echo
printf '%-14s %6s %9s %8s %5s %9s %7s %7s | %8s %8s %8s  %s\n' \
    round runs bars requests 429s seconds util sim_s done_s bars/s proc_s note
for round in $ROUNDS; do
    n="${round%%:*}-${round#*:}"
    printf '%-14s %6s %9s %8s %5s %9s %7s %7s | %8s %8s %8s  %s\n' "$n" "${R_RUNS[$n]:--}" \
        "${R_BARS[$n]:--}" "${R_REQ[$n]:--}" "${R_429[$n]:--}" "${R_SECS[$n]:--}" "${R_UTIL[$n]:--}" \
        "${R_SIMS[$n]:--}" "${R_DONE[$n]:--}" "${R_BPS[$n]:--}" "${R_WALL[$n]:--}" "${R_NOTE[$n]:-}"
done
echo "  requests = all bars requests the simulator answered (429s included); 429s = those refused"
echo "  seconds = first to last request (daemon debug log, ms); util = (requests - 429s) / ($RATE × seconds + 1)"
echo "  sim_s = one-second slots from the first to the last request in the simulator's per_second counter (cross-check)"
echo "  done_s = first request to the last run's completion (finished_at); bars/s = bars / done_s"
echo "  proc_s = the whole 'backfilld run --until-idle' process, start-up and exit included"
for tf in h1 d1; do
    p="$tf-per-symbol" b="$tf-batched"
    [ -n "${R_REQ[$p]:-}" ] && [ -n "${R_REQ[$b]:-}" ] || continue
    echo "  $tf per-symbol/batched: requests $(ratio "${R_REQ[$p]}" "${R_REQ[$b]}"), seconds $(ratio "${R_SECS[$p]}" "${R_SECS[$b]}"), done_s $(ratio "${R_DONE[$p]}" "${R_DONE[$b]}")"
done
fi

# --- three hosts, one budget, against each simulator mode --------------------
declare -A H_REQ H_429 H_PCT H_SECS H_USED H_NOTE
H_BINS=()
[ -n "$BF_BIN_BASE" ] && H_BINS+=(before)
[ -n "$HOST_ROUNDS" ] && H_BINS+=(after)
[ -n "$HOST_ROUNDS" ] && bench_symbols "$HOST_SYMBOLS" "$T/host-symbols.txt"
for which in "${H_BINS[@]}"; do
    bin=$BF_BIN
    [ "$which" = before ] && bin=$BF_BIN_BASE
    for mode in $HOST_ROUNDS; do
        name="$which-$mode"
        want_runs=$HOST_SYMBOLS
        "$PGBIN/dropdb" --if-exists backfilld
        "$PGBIN/createdb" backfilld
        "$bin" migrate >"$T/migrate-$name.out"
        "$bin" enqueue --symbols-file "$T/host-symbols.txt" --timeframe d1 --from 2024-01-01 --to 2024-12-31 \
            >"$T/enqueue-$name.out"
        sql "VACUUM ANALYZE"
        if [ "$mode" = window ]; then
            sim_get "/__sim/set?rate=0&rate_window=1s:$HOST_RATE&latency_ms=$HOST_LATENCY_MS" >/dev/null
        else
            sim_get "/__sim/set?rate=$HOST_RATE&burst=$HOST_RATE&rate_window=off&latency_ms=$HOST_LATENCY_MS" >/dev/null
        fi
        sim_get /__sim/reset >/dev/null
        hpids=() logs=()
        for ((h = 1; h <= HOSTS; h++)); do
            BACKFILLD_RATE_LIMIT=$HOST_DAEMON_RATE BACKFILLD_BATCH_SYMBOLS=1 BACKFILLD_WORKER_ID="$name-h$h" \
                "$bin" run --until-idle 2>"$T/$name-h$h.log" &
            hpids+=($!)
            PIDS+=($!)
            logs+=("$T/$name-h$h.log")
        done
        H_NOTE[$name]=""
        for p in "${hpids[@]}"; do
            WAIT_TICK=0.2 wait_deadline "$p" "$ROUND_TIMEOUT"
            [ "$TIMED_OUT" -eq 1 ] && H_NOTE[$name]="TIMED OUT" && BAD=1
            [ "$TIMED_OUT" -eq 0 ] && [ "$WAIT_RC" -ne 0 ] && H_NOTE[$name]="a daemon exited $WAIT_RC" && BAD=1
        done
        read -r _ _ secs _ <<<"$(log_window "${logs[@]}")"
        ok=$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")
        [ "$ok" != "$want_runs" ] && H_NOTE[$name]="${H_NOTE[$name]:+${H_NOTE[$name]}; }$ok of $want_runs runs succeeded" && BAD=1
        expected_bars d1 "$(paste -sd, "$T/host-symbols.txt")" hosts >/dev/null
        exact=$(check_exact d1 hosts)
        [ -z "$exact" ] || { H_NOTE[$name]="${H_NOTE[$name]:+${H_NOTE[$name]}; }$exact"; BAD=1; }
        read -r req r429 <<<"$(sim_counter '"%d %d" % (c["requests"], c["by_status"].get("429", 0))')"
        H_REQ[$name]=$req
        H_429[$name]=$r429
        H_SECS[$name]=$secs
        H_PCT[$name]=$(awk -v a="$r429" -v n="$req" 'BEGIN { if (n > 0) printf "%.1f%%", 100 * a / n; else print "-" }')
        H_USED[$name]=$(awk -v n="$req" -v a="$r429" -v s="$secs" -v r="$HOST_RATE" \
            'BEGIN { if (s > 0) printf "%.1f%%", 100 * (n - a) / (r * s + 1); else print "-" }')
        log "$name: $req requests, $r429 × 429 (${H_PCT[$name]}), ${secs}s, budget used ${H_USED[$name]} ${H_NOTE[$name]}"
    done
done
if [ ${#H_BINS[@]} -gt 0 ]; then
    echo
    echo "$HOSTS hosts sharing $((HOST_RATE * 60)) req/min through rate_limits (BACKFILLD_RATE_LIMIT=$HOST_DAEMON_RATE, per-symbol),"
    echo "$HOST_SYMBOLS symbols × 2024 d1 = $HOST_SYMBOLS runs of one request; window = alpaca-sim --rate-window 1s:$HOST_RATE, bucket = --rate $HOST_RATE --burst $HOST_RATE;"
    echo "simulator latency ${HOST_LATENCY_MS} ms"
    [ -n "$BF_BIN_BASE" ] && echo "before = $BASE_SHOWN, after = the build (both copied at start)"
    echo
    printf '%-16s %8s %5s %7s %9s %12s  %s\n' round requests 429s "429 %" seconds "budget used" note
    for which in "${H_BINS[@]}"; do
        for mode in $HOST_ROUNDS; do
            n="$which-$mode"
            printf '%-16s %8s %5s %7s %9s %12s  %s\n' "$n" "${H_REQ[$n]:--}" "${H_429[$n]:--}" \
                "${H_PCT[$n]:--}" "${H_SECS[$n]:--}" "${H_USED[$n]:--}" "${H_NOTE[$n]:-}"
        done
    done
    echo "  429 % = 429s / all requests; budget used = (requests - 429s) / ($HOST_RATE × seconds + 1),"
    echo "  seconds = first to last request over all hosts' debug logs; target ≤ 1% 429s, ≥ 95% used"
fi

[ "$BAD" -eq 0 ] || { echo "[$TEST_NAME] FAILED: a round timed out, left runs not succeeded or stored the wrong number of bars" >&2; exit 1; }
