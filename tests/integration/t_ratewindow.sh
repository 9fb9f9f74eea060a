#!/usr/bin/env bash
# The server's own rate-limit window, shared through rate_limits (sql/005):
# three hosts read X-RateLimit-Limit/Remaining/Reset from the answers and stay
# inside the server's budget even when they are configured for more.
#   1. A fixed window of 10 per second (429 without headers), hosts set to
#      1200/min: they keep to the server's 600/min, with no 429 to speak of,
#      and still use the budget.
#   2. The same against a token bucket of 10/s (X-RateLimit-Limit 600).
#   3. Someone else has spent most of a 10 s window of 30 when the hosts
#      start: X-RateLimit-Remaining reaches 0 and every host waits until
#      X-RateLimit-Reset; no 429 (one is allowed on a loaded machine).
. "$(dirname "$0")/lib.sh"

# window_stats FIRST_S LAST_S LEN: over the simulator's per-second counts (all
# bars requests, 429s included) in whole windows of LEN seconds aligned on the
# epoch: "max_per_window windows".
window_stats() {
    sim_get /__sim/counters | python3 -c "
import json, sys, collections
ps = json.load(sys.stdin)['per_second']
w = collections.Counter()
for s, n in ps:
    if $1 <= s <= $2:
        w[s // $3] += n
print(max(w.values(), default=0), len(w))"
}

# hosts_run NAME RATE: three daemons at RATE/min, per-symbol, until the queue is
# empty; sets SPAN (first to last request, s, over their logs).
hosts_run() {
    local name=$1 rate=$2 h pids=()
    for h in 1 2 3; do
        BACKFILLD_RATE_LIMIT=$rate BACKFILLD_BATCH_SYMBOLS=1 BACKFILLD_LOG_LEVEL=debug \
            BACKFILLD_WORKER_ID="$name-h$h" daemon_start "$name-h$h" --until-idle
        pids+=("$DAEMON_PID")
    done
    for p in "${pids[@]}"; do
        daemon_wait "$p" 180
        check "$name: daemon $p exits 0" "0" "$DAEMON_RC"
    done
    SPAN=$(python3 - "$T/$name"-h?.log <<'PY'
import json, sys, datetime as dt
ts = []
for f in sys.argv[1:]:
    for line in open(f, errors="replace"):
        i = line.find("{")
        try:
            o = json.loads(line[i:]) if i >= 0 else {}
        except ValueError:
            continue
        if o.get("msg") in ("page fetched", "rate limited, waiting", "page retry"):
            ts.append(dt.datetime.strptime(o["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp())
print(f"{max(ts) - min(ts):.3f}" if ts else 0)
PY
)
}

# fresh_queue N: an empty queue with N one-request runs (N symbols × 2024 d1).
fresh_queue() {
    sql "TRUNCATE bars, job_runs, job_run_claims, job_definitions RESTART IDENTITY CASCADE; DELETE FROM rate_limits"
    python3 -c "print('\n'.join('S%03dA' % i for i in range($1)))" >"$T/syms.txt"
    bf enqueue --symbols-file "$T/syms.txt" --timeframe d1 --from 2024-01-01 --to 2024-12-31 >/dev/null
    check "$1 runs queued" "$1" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'queued'")"
}

pg_start
sim_start --rate-window 1s:10
bf migrate >/dev/null
check "schema 5 applied" "t" "$(sql "SELECT max(version) >= 5 FROM schema_migrations")"

# 1. A fixed window of 10/s; the hosts are configured for twice that.
fresh_queue 150
t0=$(date +%s)
hosts_run fixed 1200
t1=$(date +%s)
read -r req r429 <<<"$(sim_counter '"%d %d" % (c["requests"], c["by_status"]["429"])')"
read -r most windows <<<"$(window_stats "$t0" "$t1" 1)"
used=$(python3 -c "print(round(100 * ($req - $r429) / (10 * $SPAN + 1)))")
log "fixed 1s:10, hosts at 1200/min: $req requests, $r429 × 429, busiest second $most, ${SPAN}s, budget used $used%"
check "fixed window: every run succeeded" "150" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
# The bench's target is 1%; a test on 2 shared cores allows one request delayed past the guard more.
check_cmd "fixed window: at most 2% 429s ($r429 of $req)" test $((r429 * 50)) -le "$req"
check_cmd "fixed window: no second saw more than 11 requests ($most)" test "$most" -le 11
check_cmd "fixed window: at least 90% of the server's budget used ($used%)" test "$used" -ge 90
check "the server's Limit is shared" "600" "$(sql "SELECT server_per_minute FROM rate_limits WHERE name = 'alpaca'")"
check "every token granted was counted in rate_limits" "t" \
    "$(sql "SELECT grant_seq >= 150 AND window_ms = 1000 FROM rate_limits WHERE name = 'alpaca'")"

# 2. A token bucket of 10/s (burst 10), hosts again at 1200/min.
sim_get "/__sim/set?rate_window=off&rate=10&burst=10" >/dev/null
sim_get /__sim/reset >/dev/null
fresh_queue 150
hosts_run bucket 1200
read -r req r429 <<<"$(sim_counter '"%d %d" % (c["requests"], c["by_status"]["429"])')"
used=$(python3 -c "print(round(100 * ($req - $r429) / (10 * $SPAN + 1)))")
log "bucket 10/s, hosts at 1200/min: $req requests, $r429 × 429, ${SPAN}s, budget used $used%"
check "bucket: every run succeeded" "150" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
check_cmd "bucket: at most 2% 429s ($r429 of $req)" test $((r429 * 50)) -le "$req"
check_cmd "bucket: at least 90% of the server's budget used ($used%)" test "$used" -ge 90

# 3. Someone else spends 25 of a 10 s window of 30; the hosts (at 600/min) get
#    the 5 left, see Remaining 0 and wait for Reset, then go on.
sim_get "/__sim/set?rate=0&rate_window=10s:30" >/dev/null
fresh_queue 40
wait_for "the first seconds of a 10 s window" 15 python3 -c "import time; exit(0 if time.time() % 10 < 2 else 1)"
win=$(($(date +%s) / 10))
AUTH=(-H "APCA-API-KEY-ID: $APCA_API_KEY_ID" -H "APCA-API-SECRET-KEY: $APCA_API_SECRET_KEY")
args=()
for i in $(seq 25); do args+=("http://127.0.0.1:$SIM_PORT/v2/stocks/AAPL/bars?timeframe=1Day&start=2024-01-02&end=2024-01-03" -o /dev/null); done
curl -s "${AUTH[@]}" "${args[@]}"
sim_get /__sim/reset >/dev/null
check "still the same window after the other client's 25" "$win" "$(($(date +%s) / 10))"
hosts_run spent 600
t1=$(date +%s)
r429=$(sim_counter 'c["by_status"]["429"]')
read -r most windows <<<"$(window_stats $((win * 10)) "$t1" 10)"
first=$(sim_get /__sim/counters | python3 -c "
import json, sys
print(sum(n for s, n in json.load(sys.stdin)['per_second'] if s // 10 == $win))")
log "10s:30 with 25 spent by another client: $r429 × 429; the hosts sent $first in that window, at most $most in any"
check_cmd "Remaining 0: no 429 to speak of ($r429)" test "$r429" -le 1
check_cmd "the hosts sent no more than the 5 left in the spent window ($first)" test "$first" -le 5
check_cmd "and no more than 30 in any later window ($most)" test "$most" -le 30
check "spent: every run succeeded" "40" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
finish
