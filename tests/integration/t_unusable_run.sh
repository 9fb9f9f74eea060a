#!/usr/bin/env bash
# A claimed row the daemon cannot use (the schema allows it, the daemon's
# buffers and clock do not): a symbol longer than 63 characters, an
# adjustment longer than 63, a range before 1970. Each is given back at once
# as failed, for good, with a message that names what is wrong, instead of
# being left running until its lease expires and ending as "lease expired".
# The usable runs next to them are done as usual. (A run whose symbol or
# adjustment no longer is its definition's covers nothing for it: the
# scheduler queues those chunks again, as the definition says, and they succeed.)
. "$(dirname "$0")/lib.sh"

pg_start
sim_start
bf migrate >/dev/null
bf enqueue --symbols "AAPL,MSFT,NVDA,AMZN" --timeframe d1 --from 2024-01-01 --to 2024-01-31 >/dev/null
LONG=$(printf 'X%.0s' $(seq 70))
sql "UPDATE job_runs SET symbol = '$LONG' WHERE symbol = 'MSFT';
     UPDATE job_runs SET adjustment = repeat('a', 64) WHERE symbol = 'NVDA';
     UPDATE job_runs SET range_start = '1969-12-01T00:00:00Z' WHERE symbol = 'AMZN'"

# A lease far longer than the test: a run left running would keep --until-idle from ending.
export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_LEASE_SECONDS=3600
daemon_start d1 --until-idle
daemon_wait "$DAEMON_PID" 60
check "the daemon exits 0 without waiting for a lease" "0" "$DAEMON_RC"
check "the usable run succeeded" "succeeded" "$(sql "SELECT status FROM job_runs WHERE symbol = 'AAPL'")"
check "the long symbol failed for good, naming the column" \
    "failed|1|claimed run unusable: symbol is 70 characters long, at most 63 are supported" \
    "$(sql "SELECT status, attempt, last_error FROM job_runs WHERE symbol = '$LONG'")"
check "the long adjustment failed for good, naming the column" \
    "failed|claimed run unusable: adjustment is 64 characters long, at most 63 are supported" \
    "$(sql "SELECT status, last_error FROM job_runs WHERE symbol = 'NVDA' AND adjustment <> 'raw'")"
check "the range before 1970 failed for good, naming the column" "failed|t" \
    "$(sql "SELECT status, last_error LIKE 'claimed run unusable: range_start 1969-12-01% is not a time from 1970 on'
              FROM job_runs WHERE symbol = 'AMZN'")"
for s in MSFT NVDA AMZN; do
    id=$(sql "SELECT id FROM job_runs WHERE status = 'failed' AND (symbol = '$s' OR ('$s' = 'MSFT' AND symbol = '$LONG'))")
    check_cmd "run $id ($s) logged as unusable, with its job id" \
        grep -q "\"msg\":\"claimed run unusable\",\"job_id\":$id," "$T/d1.log"
done
check "the definitions' own MSFT and NVDA chunks were queued again and succeeded" "2" \
    "$(sql "SELECT count(*) FROM job_runs WHERE symbol IN ('MSFT', 'NVDA') AND adjustment = 'raw' AND status = 'succeeded'")"
check "nothing was left running or expired" "0" \
    "$(sql "SELECT count(*) FROM job_runs WHERE status = 'running' OR last_error LIKE '%lease%'")"
finish
