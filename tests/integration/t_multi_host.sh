#!/usr/bin/env bash
# Three daemons on one database drain 500 runs together. Proven from the
# database: every run was claimed by exactly one host for its one attempt,
# every host took a share, and the data is complete and exact.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start --latency-ms 20
bf migrate >/dev/null
bf enqueue --symbols "$SYMBOLS50" --timeframe h1 --from 2024-03-01 --to 2024-12-31 >/dev/null
check "500 runs queued" "500" "$(sql "SELECT count(*) FROM job_runs")"

export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_CONCURRENCY=8 BACKFILLD_CLAIM_BATCH=4
pids=()
for i in 1 2 3; do
    BACKFILLD_WORKER_ID="host$i" daemon_start "d$i" --until-idle
    pids+=("$DAEMON_PID")
done
for p in "${pids[@]}"; do
    daemon_wait "$p" 180
    check "daemon $p exits 0" "0" "$DAEMON_RC"
done
check "every run succeeded on its first attempt" "500|500" "$(sql "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE attempt = 1) FROM job_runs")"
check "one claim per run and attempt" "500|500" "$(sql "SELECT count(*), count(DISTINCT (run_id, attempt)) FROM job_run_claims")"
check "each run completed by the host that claimed it" "0" "$(sql "SELECT count(*) FROM job_runs r JOIN job_run_claims c ON c.run_id = r.id AND c.attempt = r.attempt WHERE r.locked_by IS NOT NULL")"
check "all three hosts took a share" "3" "$(sql "SELECT count(DISTINCT worker) FROM job_run_claims")"
log "claims per host: $(sql "SELECT string_agg(worker || '=' || n, ' ') FROM (SELECT worker, count(*) n FROM job_run_claims GROUP BY 1 ORDER BY 1) x")"
load_expected h1 --symbols "$SYMBOLS50" --timeframe 1Hour --start "$(ny 2024-03-01)" --end "$(ny_end 2024-12-31)"
check_bars_exact
finish
