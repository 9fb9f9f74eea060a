#!/usr/bin/env bash
# The database drops the daemon's sessions mid-work: it reconnects by itself
# and loses nothing. A claim that committed but whose answer never arrived
# (simulated: a run locked in the daemon's name that it never heard of) is
# given back at the reconnect without spending an attempt, then done.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start --latency-ms 30
bf migrate >/dev/null
bf enqueue --symbols "AAPL,MSFT,NVDA" --timeframe h1 --from 2024-01-01 --to 2024-12-31 >/dev/null
bf enqueue --symbols ORPHAN --timeframe d1 --from 2024-01-01 --to 2024-12-31 >/dev/null
# ORPHAN's run: locked by the daemon-to-be with a long lease, as a lost claim answer leaves it.
sql "UPDATE job_runs SET status = 'running', attempt = 1, locked_by = 'w1', started_at = now(),
       locked_until = now() + interval '10 minutes' WHERE symbol = 'ORPHAN';
     INSERT INTO job_run_claims (run_id, attempt, worker) SELECT id, 1, 'w1' FROM job_runs WHERE symbol = 'ORPHAN'"

export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_WORKER_ID=w1 BACKFILLD_BATCH_SYMBOLS=1 BACKFILLD_CONCURRENCY=2
daemon_start d1 --until-idle
wait_for "a few runs done" 30 sql_ge "SELECT count(*) FROM job_runs WHERE status = 'succeeded'" 3
check "ORPHAN is untouched while the sessions live" "running|1" "$(sql "SELECT status, attempt FROM job_runs WHERE symbol = 'ORPHAN'")"
# Four sessions: main, lease and BACKFILLD_WRITERS=2 writers.
check "all four sessions killed" "4" "$(sql "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'backfilld') x")"
daemon_wait "$DAEMON_PID" 90
check "the daemon exits 0 after reconnecting" "0" "$DAEMON_RC"
check_cmd "the loss was logged" grep -q '"msg":"db connection lost"' "$T/d1.log"
check_cmd "all four sessions reconnected" test "$(grep -c '"msg":"db connected"' "$T/d1.log")" -ge 8
# ORPHAN at least: a claim of the daemon's own in flight when the sessions died may be in it too.
ORPHAN_ID=$(sql "SELECT id FROM job_runs WHERE symbol = 'ORPHAN'")
check_cmd "the unanswered claim was given back, naming ORPHAN's run $ORPHAN_ID" \
    grep -Eq "\"msg\":\"runs of an unanswered claim released\",\"runs\":[1-9][0-9]*,\"job_ids\":\"([0-9]+,)*$ORPHAN_ID(,[0-9]+)*\"" "$T/d1.log"
check "ORPHAN done on attempt 1 (no attempt spent on it)" "succeeded|1" "$(sql "SELECT status, attempt FROM job_runs WHERE symbol = 'ORPHAN'")"
check "every run succeeded" "37|37" "$(sql "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM job_runs")"
load_expected d1 --symbols ORPHAN --timeframe 1Day --start "$(ny 2024-01-01)" --end "$(ny_end 2024-12-31)"
sql "CREATE TABLE expected_d1 AS TABLE expected_bars"
load_expected h1 --symbols "AAPL,MSFT,NVDA" --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-12-31)"
sql "INSERT INTO expected_bars TABLE expected_d1"
check "data exact" "0" "$(bars_diff)"
finish
