#!/usr/bin/env bash
# Multi-symbol batching: runs sharing timeframe, feed, adjustment and range go
# out as one /v2/stocks/bars?symbols=... request and are split back by symbol.
# Short pages and a trailing empty page make symbols straddle pages (they must
# be stitched); a symbol with no data completes with zero bars; a malformed
# symbol fails only its own run. The result must be row for row what
# per-symbol mode writes, with several times fewer requests.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start --short-pages --trailing-empty --seed 3
bf migrate >/dev/null
export BACKFILLD_RATE_LIMIT=600000
SYMS="$SYMBOLS50,ZZNODATA"

# Batched (the default mode).
bf enqueue --symbols "$SYMS" --timeframe h1 --from 2024-01-01 --to 2024-12-31 >/dev/null
check "612 runs queued" "612" "$(sql "SELECT count(*) FROM job_runs")"
sim_get /__sim/reset >/dev/null
daemon_start batched --until-idle
daemon_wait "$DAEMON_PID" 120
check "batched daemon exits 0" "0" "$DAEMON_RC"
batched_requests=$(sim_counter 'c["requests"]')
check "every run succeeded" "612" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
check "the symbol without data succeeded with 0 bars" "12|0" "$(sql "SELECT count(*), sum(bars_written) FROM job_runs WHERE symbol = 'ZZNODATA' AND status = 'succeeded'")"
# One claim takes all 612 runs: 51 symbols of one span. At 600,000 requests a minute the budget
# could keep thousands in flight, more than the 8 connections carry, so the plan is split over
# the 8 (6-7 symbols each), not made one request walking all its pages in turn.
most=$(grep -o '"request_symbols":[0-9]*' "$T/batched.log" | cut -d: -f2 | sort -n | tail -1)
check_cmd "runs really were batched (up to ${most:-0} symbols a request)" test "${most:-0}" -ge 2
check_cmd "a budget the connections cannot spend: requests split over the 8 connections (${most:-0} <= 7)" \
    test "${most:-99}" -le 7
load_expected h1 --symbols "$SYMBOLS50" --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-12-31)"
check_bars_exact batched
# fetched_at differs between the passes by nature: every other column must not.
sql "CREATE TABLE batched_bars AS SELECT symbol, timeframe, feed, adjustment, ts, open, high, low, close,
                                         volume, trade_count, vwap, final FROM bars"

# Per-symbol mode, same work, from scratch.
sql "TRUNCATE bars, job_runs, job_run_claims, job_definitions RESTART IDENTITY CASCADE"
bf enqueue --symbols "$SYMS" --timeframe h1 --from 2024-01-01 --to 2024-12-31 >/dev/null
sim_get /__sim/reset >/dev/null
# 20 slots: runs whose bars wait for the writer give theirs up, but a daemon holds 2 x 20 at most.
BACKFILLD_BATCH_SYMBOLS=1 BACKFILLD_CONCURRENCY=20 daemon_start single --until-idle
daemon_wait "$DAEMON_PID" 180
check "per-symbol daemon exits 0" "0" "$DAEMON_RC"
single_requests=$(sim_counter 'c["requests"]')
check "per-symbol: every run succeeded" "612" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
held=$(sql "SELECT max((SELECT count(*) FROM job_runs b WHERE b.started_at <= a.started_at AND b.finished_at > a.started_at)) FROM job_runs a")
log "per-symbol at concurrency 20: at most $held runs held at a claim"
check_cmd "never more than 2 x concurrency runs held ($held)" test "$held" -le 40
check "exactly the same rows as batched mode" "0" "$(sql "WITH b AS (SELECT symbol, timeframe, feed, adjustment, ts, open, high, low, close, volume,
                             trade_count, vwap, final FROM bars)
         SELECT (SELECT count(*) FROM (TABLE b EXCEPT TABLE batched_bars) x)
              + (SELECT count(*) FROM (TABLE batched_bars EXCEPT TABLE b) y)")"
log "requests: per-symbol $single_requests, batched $batched_requests ($(python3 -c "print(round($single_requests / $batched_requests, 1))")x fewer)"
check_cmd "batched mode needs at least 5x fewer requests ($single_requests vs $batched_requests)" test "$single_requests" -ge $((5 * batched_requests))

# A malformed symbol inside a batch: only its run fails; the batch is split and the rest complete.
sql "TRUNCATE bars, job_runs, job_run_claims, job_definitions RESTART IDENTITY CASCADE"
# (A budget that binds, so the five go out as one request rather than spread over the connections.)
bf enqueue --symbols 'AAPL,MSFT,BAD$,NVDA,TSLA' --timeframe d1 --from 2024-01-01 --to 2024-12-31 >/dev/null
BACKFILLD_RATE_LIMIT=600 daemon_start split --until-idle
daemon_wait "$DAEMON_PID" 60
check "split daemon exits 0" "0" "$DAEMON_RC"
check "only BAD\$ failed, at once, with Alpaca's message" "BAD\$|1|HTTP 400: invalid symbol: BAD\$" "$(sql "SELECT symbol, attempt, last_error FROM job_runs WHERE status = 'failed'")"
check "the other four succeeded" "4" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
grep -q '"msg":"request split around a malformed symbol"' "$T/split.log" || fail "the split was not logged"
finish
