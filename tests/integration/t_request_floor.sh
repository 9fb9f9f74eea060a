#!/usr/bin/env bash
# Requests close to the floor (issue #11): 40 symbols x 2016-2020 of d1 (200
# one-year runs, all claimed at once) cost at most 1.05 x ceil(bars / 10,000)
# requests, because a symbol's adjacent runs share one request over their
# whole span and a request is many pages long, not cut to one page. Every
# bar still lands in its own run, value for value; the same again with a
# malformed symbol among them (the request is split around it) and with short
# pages (the server returns fewer bars than the limit: more requests, same
# bars).
. "$(dirname "$0")/lib.sh"

pg_start
sim_start
bf migrate >/dev/null
export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_CLAIM_BATCH=1000 BACKFILLD_CONCURRENCY=1000
SYMS=$(for i in $(seq 0 39); do printf 'S%03dA\n' "$i"; done | paste -sd,)

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
