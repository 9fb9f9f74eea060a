#!/usr/bin/env bash
# Requests close to the floor (issue #11): 40 symbols x 2016-2020 of d1 (200
# one-year runs, all claimed at once) cost at most 1.05 x ceil(bars / 10,000)
# requests, because a symbol's adjacent runs share one request over their
# whole span and a request is many pages long, not cut to one page. Every
# bar still lands in its own run, value for value; the same again with a
# malformed symbol among them (the request is split around it) and with short
# pages (the server returns fewer bars than the limit: more requests, same
# bars). First, with the default claim size and concurrency, the batched
# workloads of bench/request_floor.sh: 200 symbols x 10 years of d1, and h1
# for 50 busy symbols next to 50 with no bars, each within 1.05 x the floor.
# Requests are what is scarce only while the budget binds: the rounds that
# count them run at 300 a minute (5 a second: a plan is widened to 2
# requests only if a page took 0.4 s, and the simulator answers in
# milliseconds; the daemon assumes 0.1 s before it has measured one). With
# a budget the connections cannot spend, requests are split to walk pages
# side by side (t_batching).
. "$(dirname "$0")/lib.sh"

pg_start
sim_start
bf migrate >/dev/null
export BACKFILLD_RATE_LIMIT=300
unset BACKFILLD_CLAIM_BATCH BACKFILLD_CONCURRENCY

# defaults_round NAME TF FROM TO SYMBOLS: enqueue, run with the defaults, exact, within 1.05 x.
defaults_round() {
    local name=$1 tf=$2 from=$3 to=$4 syms=$5 api
    case $tf in d1) api=1Day ;; h1) api=1Hour ;; esac
    sql "TRUNCATE bars, job_runs, job_run_claims, job_definitions RESTART IDENTITY CASCADE"
    bf enqueue --symbols "$syms" --timeframe "$tf" --from "$from" --to "$to" >/dev/null
    sim_get /__sim/reset >/dev/null
    daemon_start "$name" --until-idle
    daemon_wait "$DAEMON_PID" 120
    check "$name: daemon exits 0" "0" "$DAEMON_RC"
    check "$name: every run succeeded" "0" "$(sql "SELECT count(*) FROM job_runs WHERE status <> 'succeeded'")"
    load_expected "$tf" --symbols "$syms" --timeframe "$api" --start "$(ny "$from")" --end "$(ny_end "$to")"
    check_bars_exact "$name"
    local bars floor requests
    bars=$(sql "SELECT count(*) FROM bars")
    floor=$(((bars + 9999) / 10000))
    requests=$(sim_counter 'c["requests"]')
    log "$name: $bars bars, $requests requests, floor $floor (defaults)"
    check_cmd "$name: requests ($requests) within 1.05 x the floor ($floor) with the defaults" \
        test $((requests * 100)) -le $((floor * 105))
}
defaults_round d1-defaults d1 2016-01-01 2025-12-31 \
    "$(for i in $(seq 0 199); do printf 'S%03dA\n' "$i"; done | paste -sd,)"
defaults_round mixed-defaults h1 2024-01-01 2024-12-31 \
    "$(for i in $(seq 0 49); do printf 'S%03dA\nZZ%03dQ\n' "$i" "$i"; done | paste -sd,)"

export BACKFILLD_CLAIM_BATCH=1000 BACKFILLD_CONCURRENCY=1000
SYMS=$(for i in $(seq 0 39); do printf 'S%03dA\n' "$i"; done | paste -sd,)

sql "TRUNCATE bars, job_runs, job_run_claims, job_definitions RESTART IDENTITY CASCADE"
bf enqueue --symbols "$SYMS" --timeframe d1 --from 2016-01-01 --to 2020-12-31 >/dev/null
check "200 runs queued" "200" "$(sql "SELECT count(*) FROM job_runs")"
sim_get /__sim/reset >/dev/null
daemon_start floor --until-idle
daemon_wait "$DAEMON_PID" 120
check "daemon exits 0" "0" "$DAEMON_RC"
check "every run succeeded" "200" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
load_expected d1 --symbols "$SYMS" --timeframe 1Day --start "$(ny 2016-01-01)" --end "$(ny_end 2020-12-31)"
check_bars_exact floor
check "each run wrote exactly its own year's bars" "0" "$(sql "SELECT count(*) FROM job_runs r
    WHERE r.bars_written <> (SELECT count(*) FROM expected_bars e WHERE e.symbol = r.symbol
                              AND e.ts >= r.range_start AND e.ts < r.range_end)")"
bars=$(sql "SELECT count(*) FROM bars")
floor=$(((bars + 9999) / 10000))
requests=$(sim_counter 'c["requests"]')
log "$bars bars, $requests requests, floor $floor"
check_cmd "requests ($requests) within 1.05 x the floor ($floor)" test $((requests * 100)) -le $((floor * 105))

# A malformed symbol in the middle: only its runs fail; the others are fetched again without it.
export BACKFILLD_RATE_LIMIT=600000
sql "TRUNCATE bars, job_runs, job_run_claims, job_definitions RESTART IDENTITY CASCADE"
bf enqueue --symbols "S000A,S001A,BAD\$,S002A" --timeframe d1 --from 2016-01-01 --to 2020-12-31 >/dev/null
daemon_start split --until-idle
daemon_wait "$DAEMON_PID" 60
check "split: daemon exits 0" "0" "$DAEMON_RC"
check "split: BAD\$'s five runs failed at once" "5|1" "$(sql "SELECT count(*), max(attempt) FROM job_runs WHERE status = 'failed' AND symbol = 'BAD\$'")"
check "split: the others succeeded" "15" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
load_expected d1 --symbols S000A,S001A,S002A --timeframe 1Day --start "$(ny 2016-01-01)" --end "$(ny_end 2020-12-31)"
check_bars_exact split

# Short pages and a trailing empty page: symbols and runs straddle pages anywhere.
sim_stop
sim_start --short-pages --trailing-empty --seed 5
sql "TRUNCATE bars, job_runs, job_run_claims, job_definitions RESTART IDENTITY CASCADE"
bf enqueue --symbols "$SYMS" --timeframe d1 --from 2016-01-01 --to 2020-12-31 >/dev/null
daemon_start short --until-idle
daemon_wait "$DAEMON_PID" 120
check "short pages: daemon exits 0" "0" "$DAEMON_RC"
check "short pages: every run succeeded" "200" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
load_expected d1 --symbols "$SYMS" --timeframe 1Day --start "$(ny 2016-01-01)" --end "$(ny_end 2020-12-31)"
check_bars_exact short
check "short pages: each run wrote exactly its own year's bars" "0" "$(sql "SELECT count(*) FROM job_runs r
    WHERE r.bars_written <> (SELECT count(*) FROM expected_bars e WHERE e.symbol = r.symbol
                              AND e.ts >= r.range_start AND e.ts < r.range_end)")"
finish
