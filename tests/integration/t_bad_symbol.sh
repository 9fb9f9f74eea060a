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
finish
