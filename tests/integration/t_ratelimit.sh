#!/usr/bin/env bash
# The Alpaca budget: requests per second measured by the simulator stay at
# the limit. One daemon against a simulator enforcing 5 requests/s; then
# three daemons sharing a 10 requests/s budget through the database, with the
# rate raised by an operator's SQL UPDATE while they run.
. "$(dirname "$0")/lib.sh"

# max_window N LIMIT: the largest number of requests in any N consecutive seconds.
max_window() {
    sim_get /__sim/counters | python3 -c "
import json, sys
ps = dict(json.load(sys.stdin)['per_second'])
n = $1
print(max((sum(ps.get(s + k, 0) for k in range(n)) for s in ps), default=0))"
}

pg_start
sim_start --rate 5 --burst 5
bf migrate >/dev/null
SYMS="AAPL,AMZN,GOOGL,META,MSFT"
bf enqueue --symbols "$SYMS" --timeframe h1 --from 2024-01-01 --to 2024-12-31 >/dev/null
export BACKFILLD_BATCH_SYMBOLS=1   # per-symbol: 60 requests, so the pacing shows
BACKFILLD_RATE_LIMIT=300 daemon_start d1 --until-idle
daemon_wait "$DAEMON_PID" 90
check "the backfill completes" "0|60" "$DAEMON_RC|$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
r429=$(sim_counter 'c["by_status"].get("429", 0)')
w3=$(max_window 3)
log "5/s: $(sim_counter 'c["requests"]') requests, $r429 answered 429, at most $w3 in any 3 s"
# A stall of the simulator lets a few paced requests arrive together: a handful, not a stream.
check_cmd "at most a handful of 429s ($r429)" test "$r429" -le 8
check_cmd "never above the limit for long: $w3 requests in the busiest 3 s (limit 15 + burst 5)" test "$w3" -le 20
load_expected h1 --symbols "$SYMS" --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-12-31)"
check "data exact" "0" "$(bars_diff)"

# Three hosts, one budget of 10/s (600/min) shared through rate_limits.
sql "TRUNCATE bars, job_runs, job_run_claims, job_definitions RESTART IDENTITY CASCADE"
sim_stop
sim_start
bf enqueue --symbols "$SYMBOLS50" --timeframe h1 --from 2024-01-01 --to 2024-09-30 >/dev/null
check "450 runs queued" "450" "$(sql "SELECT count(*) FROM job_runs")"
pids=()
# 50 slots each, so the first host to start cannot take the whole queue at once.
for i in 1 2 3; do
    BACKFILLD_RATE_LIMIT=600 BACKFILLD_CONCURRENCY=50 BACKFILLD_CLAIM_BATCH=50 \
        BACKFILLD_WORKER_ID="host$i" daemon_start "h$i" --until-idle
    pids+=("$DAEMON_PID")
done
wait_for "100 runs done" 60 sql_ge "SELECT count(*) FROM job_runs WHERE status = 'succeeded'" 100
w3=$(max_window 3)
log "3 hosts at 10/s: at most $w3 requests in any 3 s so far"
# 40 is the most the budget grants in 3 s (30 + a full bucket of 10); a request granted at the end
# of one second may reach the simulator in the next, hence a little slack.
check_cmd "together within the budget: $w3 in the busiest 3 s (limit 30 + burst 10)" test "$w3" -le 44
check "each host took part" "3" "$(sql "SELECT count(DISTINCT worker) FROM job_run_claims")"
# An operator raises the budget to 30/s by SQL; the hosts follow without a restart.
sql "UPDATE rate_limits SET per_minute = 1800 WHERE name = 'alpaca'"
before=$(sim_counter 'c["requests"]')
upd_s=$(date +%s)
wait_for "120 more requests" 60 python3 -c "
import json, urllib.request, sys
c = json.load(urllib.request.urlopen('http://127.0.0.1:$SIM_PORT/__sim/counters'))
sys.exit(0 if c['requests'] >= $before + 120 else 1)"
# The rate as the simulator counted it, over the whole seconds after the UPDATE's
# second and before the current one.
rate=$(sim_get /__sim/counters | python3 -c "
import json, sys
ps = dict(json.load(sys.stdin)['per_second'])
secs = range($upd_s + 1, max(ps))
print(round(sum(ps.get(s, 0) for s in secs) / len(secs), 1) if len(secs) else 0)")
log "after UPDATE per_minute = 1800: $rate requests/s (simulator's count, whole seconds)"
check_cmd "the SQL change raised the rate well above the old 10/s ($rate/s)" python3 -c "import sys; sys.exit(0 if $rate > 15 else 1)"
for p in "${pids[@]}"; do
    daemon_wait "$p" 120
    check "daemon $p exits 0" "0" "$DAEMON_RC"
done
check "every run succeeded" "450" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
finish
