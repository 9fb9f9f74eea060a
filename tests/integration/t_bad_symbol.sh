#!/usr/bin/env bash
# A malformed symbol gets HTTP 400 from Alpaca: its run fails at once (no
# retry: it can't succeed) with Alpaca's message stored and logged; the other
# runs go on and succeed.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start
bf migrate >/dev/null
bf enqueue --symbols 'AAPL,BAD$,MSFT' --timeframe d1 --from 2024-01-01 --to 2024-12-31 >/dev/null
export BACKFILLD_RATE_LIMIT=600000
daemon_start d1 --until-idle
daemon_wait "$DAEMON_PID" 60
check "daemon exits 0" "0" "$DAEMON_RC"
check "BAD\$ failed on its first attempt" "failed|1" "$(sql "SELECT status, attempt FROM job_runs WHERE symbol = 'BAD\$'")"
check "Alpaca's message is stored" "HTTP 400: invalid symbol: BAD\$" "$(sql "SELECT last_error FROM job_runs WHERE symbol = 'BAD\$'")"
check "the error history has it" "1" "$(sql "SELECT jsonb_array_length(errors) FROM job_runs WHERE symbol = 'BAD\$'")"
check "the other runs succeeded" "2" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
check "no bars for the bad symbol" "0" "$(sql "SELECT count(*) FROM bars WHERE symbol = 'BAD\$'")"
line=$(grep '"msg":"run failed"' "$T/d1.log" || true)
echo "$line" | grep -q '"symbol":"BAD\$"' || fail "no 'run failed' line naming BAD\$: $line"
echo "$line" | grep -q '"job_id":' || fail "the failure line must name the job"
echo "$line" | grep -q 'invalid symbol: BAD\$' || fail "the failure line must carry Alpaca's message"

# The free plan refuses recent SIP data with 403. backfilld never asks for it
# unless told the plan has real-time SIP (BACKFILLD_SIP_REALTIME, t_free_plan);
# told so wrongly, the run fails at once with a message naming the feed, the
# setting and the way out; the same range on iex succeeds.
sim_stop
sim_start --free-plan
sql "TRUNCATE bars, job_runs, job_run_claims, job_definitions RESTART IDENTITY CASCADE"
# Ten minutes of m1: every run (two when a week starts in between) ends
# inside the plan's 15-minute window, whatever the date.
export BACKFILLD_SIP_REALTIME=true
from=$(date -u -d '-10 minutes' +%Y-%m-%dT%H:%M:00Z)
to=$(date -u +%Y-%m-%dT%H:%M:00Z)
bf enqueue --symbols AAPL --timeframe m1 --from "$from" --to "$to" --feed sip >/dev/null
bf enqueue --symbols MSFT --timeframe m1 --from "$from" --to "$to" --feed iex >/dev/null
check "runs were queued for both" "2" "$(sql "SELECT count(DISTINCT symbol) FROM job_runs")"
daemon_start d2 --until-idle
daemon_wait "$DAEMON_PID" 60
check "daemon exits 0" "0" "$DAEMON_RC"
check "recent SIP failed at once, without retries" "failed|1" "$(sql "SELECT DISTINCT status || '|' || attempt FROM job_runs WHERE symbol = 'AAPL'")"
grep -q "subscription does not permit querying recent SIP data.*feed sip.*BACKFILLD_SIP_REALTIME=false.*use feed iex" \
    <<<"$(sql "SELECT last_error FROM job_runs WHERE symbol = 'AAPL' LIMIT 1")" \
    || fail "the 403 message does not name the feed and the way out: $(sql "SELECT last_error FROM job_runs WHERE symbol = 'AAPL' LIMIT 1")"
check "the iex runs succeeded" "0" "$(sql "SELECT count(*) FROM job_runs WHERE symbol = 'MSFT' AND status <> 'succeeded'")"
finish
