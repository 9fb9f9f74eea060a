#!/usr/bin/env bash
# Operators steer backfilld only with SQL on job_definitions / job_runs. Each
# kind of steering must take effect on a running daemon, without a restart:
# a NOTIFY wakes it at once (and polling alone works without LISTEN), priority
# orders the claims, disabling a definition stops its claims mid-backfill,
# cancelling a running run stops its transfers at the next lease renewal, and
# the steering SQL from DESIGN.md runs unchanged against a live daemon.
. "$(dirname "$0")/lib.sh"

# time_to_success SYMBOL DESCRIPTION: enqueues one d1 run of SYMBOL and waits for it
# to succeed; dt = milliseconds from the enqueue to its success.
time_to_success() {
    local t0
    t0=$(now_ms)
    bf enqueue --symbols "$1" --timeframe d1 --from 2024-01-02 --to 2024-01-31 >/dev/null
    wait_for "$2" 20 sql_eq "SELECT status FROM job_runs WHERE symbol = '$1'" succeeded
    dt=$(($(now_ms) - t0))
}

# daemon_stop PID: SIGTERM, then the exit code must be 0.
daemon_stop() {
    kill -TERM "$1"
    daemon_wait "$1" 30
    check "daemon $1 exits 0 on SIGTERM" "0" "$DAEMON_RC"
}

sim_req_gt() {
    [ "$(sim_counter 'c["requests"]')" -gt "$1" ]
}

pg_start
sim_start
bf migrate >/dev/null
export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_RUN_RETRY_BASE_MS=100

# --- wake-up by NOTIFY (the 60 s poll can't be what finds the run) -----------
export BACKFILLD_POLL_INTERVAL_MS=60000
daemon_start notify
NOTIFY_PID=$DAEMON_PID
wait_for "the daemon is ready" 15 count_ge "$T/notify.log" '"msg":"ready"' 1
sleep "$(scaled 1)"   # its first (empty) claim and schedule are over: the next claim is a poll or a wake-up
time_to_success WAKE "the NOTIFY-woken run succeeds"
log "enqueue → succeeded in ${dt} ms (poll interval 60000 ms)"
check_cmd "a NOTIFY wakes the daemon: succeeded within $(scaled 3) s (${dt} ms)" test "$dt" -lt $(($(scaled 3) * 1000))
daemon_stop "$NOTIFY_PID"

# --- polling alone (no LISTEN) -------------------------------------------------
export BACKFILLD_POLL_ONLY=true BACKFILLD_POLL_INTERVAL_MS=500
daemon_start poll
POLL_PID=$DAEMON_PID
wait_for "the poll-only daemon is ready" 15 count_ge "$T/poll.log" '"msg":"ready"' 1
check_cmd "it says it is poll-only" grep -q '"msg":"starting".*"poll_only":true' "$T/poll.log"
sleep "$(scaled 1)"
time_to_success WAKE2 "the polled run succeeds"
log "poll-only: enqueue → succeeded in ${dt} ms (poll interval 500 ms)"
check_cmd "polling alone finds it within $(scaled 3) s (${dt} ms)" test "$dt" -lt $(($(scaled 3) * 1000))
daemon_stop "$POLL_PID"
unset BACKFILLD_POLL_ONLY BACKFILLD_POLL_INTERVAL_MS

# --- priority: every HIGHP run is claimed before any LOWP run -------------------
# LOWP is queued first, so without the priority its runs would come first (by id).
bf enqueue --symbols LOWP --timeframe d1 --from 2010-01-01 --to 2019-12-31 >/dev/null
bf enqueue --symbols HIGHP --timeframe d1 --from 2010-01-01 --to 2019-12-31 >/dev/null
check "10 + 10 runs queued" "10|10" "$(sql "SELECT count(*) FILTER (WHERE symbol = 'LOWP'), count(*) FILTER (WHERE symbol = 'HIGHP') FROM job_runs WHERE status = 'queued'")"
sql "UPDATE job_definitions SET priority = 10 WHERE symbol = 'HIGHP'"
BACKFILLD_CONCURRENCY=1 BACKFILLD_CLAIM_BATCH=1 "$BF_BIN" run --until-idle 2>>"$T/prio.log" &
DAEMON_PID=$!
PIDS+=($DAEMON_PID)
daemon_wait "$DAEMON_PID" 60
check "the priority daemon exits 0 when idle" "0" "$DAEMON_RC"
# (Distinct chunks: the scheduler may queue a just-completed chunk again, see the end.)
check "all 20 chunks succeeded, nothing left" "20|0" "$(sql "SELECT count(DISTINCT (symbol, range_start)) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status <> 'succeeded') FROM job_runs WHERE symbol IN ('LOWP', 'HIGHP')")"
check "every HIGHP claim precedes every LOWP claim" "t|t" "$(sql "
    SELECT max(c.id) FILTER (WHERE r.symbol = 'HIGHP') < min(c.id) FILTER (WHERE r.symbol = 'LOWP'),
           max(r.started_at) FILTER (WHERE r.symbol = 'HIGHP') <= min(r.started_at) FILTER (WHERE r.symbol = 'LOWP')
      FROM job_run_claims c JOIN job_runs r ON r.id = c.run_id WHERE r.symbol IN ('LOWP', 'HIGHP')")"

# --- disable a definition mid-backfill ---------------------------------------------
sim_get "/__sim/set?latency_ms=200" >/dev/null
bf enqueue --symbols A,B --timeframe h1 --from 2023-01-01 --to 2024-08-31 >/dev/null
check "20 + 20 runs queued" "20|20" "$(sql "SELECT count(*) FILTER (WHERE symbol = 'A'), count(*) FILTER (WHERE symbol = 'B') FROM job_runs WHERE status = 'queued'")"
# Interleave them (A1 B1 A2 B2 ...), so B is mid-backfill while A still has work.
sql "UPDATE job_runs r SET run_after = now() - interval '1 hour' + k.n * interval '1 second'
       FROM (SELECT id, row_number() OVER (PARTITION BY symbol ORDER BY range_start) AS n
               FROM job_runs WHERE symbol IN ('A', 'B')) k
      WHERE r.id = k.id"
BACKFILLD_CONCURRENCY=2 "$BF_BIN" run --until-idle 2>>"$T/disable.log" &
DAEMON_PID=$!
PIDS+=($DAEMON_PID)
DIS_PID=$DAEMON_PID
wait_for "3 of B's runs succeeded" 30 sql_ge "SELECT count(*) FROM job_runs WHERE symbol = 'B' AND status = 'succeeded'" 3
T_DIS=$(sql "UPDATE job_definitions SET enabled = false WHERE symbol = 'B' RETURNING now()")
log "B disabled at $T_DIS with $(sql "SELECT count(*) FROM job_runs WHERE symbol = 'B' AND status = 'succeeded'") of its runs succeeded"
daemon_wait "$DIS_PID" 40
check "--until-idle exits 0 though B has queued (disabled) runs" "0" "$DAEMON_RC"
check "A all succeeded" "20|0" "$(sql "SELECT count(DISTINCT range_start) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status <> 'succeeded') FROM job_runs WHERE symbol = 'A'")"
check "no B run claimed after the disable (1 s tolerance)" "0" "$(sql "
    SELECT count(*) FROM job_run_claims c JOIN job_runs r ON r.id = c.run_id
     WHERE r.symbol = 'B' AND c.claimed_at > '$T_DIS'::timestamptz + interval '1 second'")"
b_queued=$(sql "SELECT count(*) FROM job_runs WHERE symbol = 'B' AND status = 'queued'")
log "B left with $b_queued queued runs"
check_cmd "B still has queued runs" test "$b_queued" -gt 0
check "B has nothing running or failed" "0" "$(sql "SELECT count(*) FROM job_runs WHERE symbol = 'B' AND status IN ('running', 'failed')")"
check_cmd "the daemon said it was idle" grep -q '"msg":"no work left (--until-idle)"' "$T/disable.log"
# Re-enabled, a daemon finishes B.
sim_get "/__sim/set?latency_ms=0" >/dev/null
sql "UPDATE job_definitions SET enabled = true WHERE symbol = 'B'"
BACKFILLD_CONCURRENCY=4 "$BF_BIN" run --until-idle 2>>"$T/reenable.log" &
DAEMON_PID=$!
PIDS+=($DAEMON_PID)
daemon_wait "$DAEMON_PID" 40
check "the re-enabled backfill exits 0" "0" "$DAEMON_RC"
check "B all succeeded after re-enabling" "20|0" "$(sql "SELECT count(DISTINCT range_start) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status <> 'succeeded') FROM job_runs WHERE symbol = 'B'")"
load_expected h1 --symbols A,B --timeframe 1Hour --start "$(ny 2023-01-01)" --end "$(ny_end 2024-08-31)"
check "A and B data exact" "0" "$(sql "SELECT count(*) FROM (
    SELECT symbol, timeframe, ts, open, high, low, close, volume, trade_count, vwap FROM expected_bars
    EXCEPT SELECT symbol, timeframe, ts, open, high, low, close, volume, trade_count, vwap FROM bars WHERE symbol IN ('A', 'B')) x")"
check "A and B bar counts" "$(sql "SELECT count(*) FROM expected_bars")" "$(sql "SELECT count(*) FROM bars WHERE symbol IN ('A', 'B') AND timeframe = 'h1'")"

# --- cancel a running run ------------------------------------------------------------
sim_get "/__sim/set?latency_ms=1000" >/dev/null
bf enqueue --symbols LONG --timeframe m1 --from 2024-03-04 --to 2024-03-08 >/dev/null
LONG_ID=$(sql "SELECT id FROM job_runs WHERE symbol = 'LONG'")
check "one long m1 run queued" "1" "$(sql "SELECT count(*) FROM job_runs WHERE symbol = 'LONG'")"
# A cancelled chunk stays cancelled (the scheduler does not queue it again, see
# t_queue_sql); the scheduler's tick is kept out of this window anyway and LONG
# is disabled once abandoned, so the request counter only sees this run.
export BACKFILLD_LEASE_SECONDS=3 BACKFILLD_PAGE_LIMIT=50 BACKFILLD_SCHEDULE_INTERVAL_MS=600000
req0=$(sim_counter 'c["requests"]')
daemon_start cancel
CANCEL_PID=$DAEMON_PID
wait_for "the long run is running" 15 sql_eq "SELECT status FROM job_runs WHERE id = $LONG_ID" running
wait_for "its first page came back (the second was asked for)" 15 sim_req_gt $((req0 + 1))
t0=$(now_ms)
check "the operator cancels it" "1" "$(sql "WITH u AS (UPDATE job_runs SET status = 'cancelled', finished_at = now(), updated_at = now() WHERE status = 'running' RETURNING 1) SELECT count(*) FROM u")"
wait_for "the daemon abandons it" 10 count_ge "$T/cancel.log" "\"msg\":\"run abandoned: cancelled or lease lost\",\"job_id\":$LONG_ID," 1
dt=$(($(now_ms) - t0))
log "cancel → abandoned in ${dt} ms (lease 3 s, renewed every 1 s)"
check_cmd "abandoned within lease/3 + $(($(scaled 3) - 1)) s (${dt} ms)" test "$dt" -le $(($(scaled 3) * 1000))
sql "UPDATE job_definitions SET enabled = false WHERE symbol = 'LONG'"
sleep "$(scaled 1)"   # a request sent just before the abandon is counted by now
req1=$(sim_counter 'c["requests"]')
log "requests: $((req1 - req0)) for the long run before the abandon"
sleep 3
req2=$(sim_counter 'c["requests"]')
check "no HTTP request after the abandon (over 3 s)" "$req1" "$req2"
check "the run stays cancelled" "cancelled" "$(sql "SELECT status FROM job_runs WHERE id = $LONG_ID")"
check "no success or failure logged for it" "0" "$(grep -E "\"msg\":\"run (succeeded|failed|attempt failed, will retry)\",\"job_id\":$LONG_ID," "$T/cancel.log" | wc -l)"
check "in flight: nothing" "0" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'running'")"
daemon_stop "$CANCEL_PID"
check "still cancelled after the daemon stopped" "cancelled|1" "$(sql "SELECT status, attempt FROM job_runs WHERE id = $LONG_ID")"
unset BACKFILLD_LEASE_SECONDS BACKFILLD_PAGE_LIMIT BACKFILLD_SCHEDULE_INTERVAL_MS

# --- DESIGN.md's steering statements against a running daemon ------------------------
sim_get "/__sim/set?latency_ms=400" >/dev/null
bf enqueue --symbols US_BATCH_1,US_BATCH_2 --timeframe h1 --from 2024-01-01 --to 2024-06-30 >/dev/null
bf enqueue --symbols AAPL,MSFT --timeframe h1 --from 2024-01-01 --to 2024-06-30 >/dev/null
sql "UPDATE job_definitions SET enabled = false WHERE symbol IN ('AAPL', 'MSFT')"
export BACKFILLD_CONCURRENCY=1 BACKFILLD_POLL_INTERVAL_MS=60000
daemon_start design
DESIGN_PID=$DAEMON_PID
wait_for "the daemon works on US_BATCH" 15 sql_ge "SELECT count(*) FROM job_runs WHERE symbol LIKE 'US_BATCH_%' AND status = 'succeeded'" 1
cat >"$T/steer.sql" <<'SQL'
UPDATE job_definitions SET enabled = false WHERE symbol LIKE 'US_BATCH_%';
UPDATE job_definitions SET enabled = true  WHERE symbol IN ('AAPL','MSFT') AND timeframe = 'h1';
UPDATE job_runs SET status = 'cancelled', finished_at = now(), updated_at = now()
 WHERE job_def_id IN (SELECT id FROM job_definitions WHERE symbol LIKE 'US_BATCH_%') AND status = 'queued';
SELECT * FROM claim_queued_job();
SQL
T_STEER=$(sql "SELECT now()")
psql -X -v ON_ERROR_STOP=1 -f "$T/steer.sql" >"$T/steer.out" 2>&1 || { cat "$T/steer.out"; fail "the DESIGN.md statements failed"; }
check "disable: UPDATE 2" "UPDATE 2" "$(sed -n 1p "$T/steer.out")"
check "enable: UPDATE 2" "UPDATE 2" "$(sed -n 2p "$T/steer.out")"
check_cmd "cancel: some queued US_BATCH runs cancelled" grep -Eq '^UPDATE [1-9][0-9]*$' <(sed -n 3p "$T/steer.out")
check_cmd "the hand claim returned one run" grep -q '^(1 row)$' "$T/steer.out"
HAND=$(sql "SELECT id || '|' || symbol || '|' || locked_by FROM job_runs WHERE status = 'running' AND locked_by LIKE 'psql:%'")
log "claimed by hand: $HAND"
HAND_ID=${HAND%%|*}
check_cmd "an AAPL or MSFT run is held by psql" grep -Eq '^[0-9]+\|(AAPL|MSFT)\|psql:[0-9]+$' <<<"$HAND"
check "US_BATCH has nothing queued" "0" "$(sql "SELECT count(*) FROM job_runs WHERE symbol LIKE 'US_BATCH_%' AND status = 'queued'")"
# The daemon, woken by the enable, works on the other AAPL/MSFT runs meanwhile.
wait_for "the daemon works on AAPL/MSFT" 20 sql_ge "SELECT count(*) FROM job_runs WHERE symbol IN ('AAPL', 'MSFT') AND status = 'succeeded'" 2
check "the daemon left the hand-claimed run alone" "running|psql" "$(sql "SELECT status, split_part(locked_by, ':', 1) FROM job_runs WHERE id = $HAND_ID")"
check "released by hand" "1" "$(sql "SELECT release_job_runs(locked_by, ARRAY[id], ARRAY[attempt]) FROM job_runs WHERE status='running' AND locked_by LIKE 'psql:%'")"
wait_for "every AAPL/MSFT run succeeded" 40 sql_eq "SELECT count(*) FROM job_runs WHERE symbol IN ('AAPL', 'MSFT') AND status <> 'succeeded'" 0
check "the released run was done by the daemon on attempt 1" "succeeded|1" "$(sql "SELECT status, attempt FROM job_runs WHERE id = $HAND_ID")"
check "its claims: psql, then the daemon" "psql,daemon" "$(sql "SELECT string_agg(CASE WHEN worker LIKE 'psql:%' THEN 'psql' ELSE 'daemon' END, ',' ORDER BY id) FROM job_run_claims WHERE run_id = $HAND_ID")"
check "no US_BATCH run claimed after the statements (1 s tolerance)" "0" "$(sql "
    SELECT count(*) FROM job_run_claims c JOIN job_runs r ON r.id = c.run_id
     WHERE r.symbol LIKE 'US_BATCH_%' AND c.claimed_at > '$T_STEER'::timestamptz + interval '1 second'")"
check "US_BATCH: none running, some cancelled" "0|t" "$(sql "SELECT count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'cancelled') > 0 FROM job_runs WHERE symbol LIKE 'US_BATCH_%'")"
daemon_stop "$DESIGN_PID"

# --- the scheduler must not queue again a chunk whose run is completing ---------------
# Every definition change (a NOTIFY on backfilld_defs) makes the daemon call
# schedule_due_jobs() on its main session while its writer session completes
# runs. Here the two are put in the losing order by hand: the completion holds
# its row until the scheduler is waiting on it, then commits.
bf enqueue --symbols RACE --timeframe d1 --from 2010-01-01 --to 2011-12-31 >/dev/null
RACE=$(sql "SELECT id || '|' || symbol FROM claim_queued_job('W', 1, 30)")
check_cmd "claimed RACE's first chunk as W" grep -Eq '^[0-9]+\|RACE$' <<<"$RACE"
RACE_ID=${RACE%%|*}
# (0 bars: complete_job_runs counts the bars stored in the range, and this chunk has none.)
# No fixed sleep decides the order: the completion waits for an advisory lock
# (held by a gate session) before its COMMIT, and the gate is only lifted once
# the scheduler has returned or is waiting on a lock.
GATE_KEY="hashtext('t_steering.race_gate')"
PGAPPNAME=race_gate psql -XAtq -c "BEGIN; SELECT pg_advisory_xact_lock($GATE_KEY); SELECT pg_sleep(600); COMMIT;" >/dev/null 2>&1 &
GATE=$!
PIDS+=("$GATE")
wait_for "the gate is closed" 10 sql_eq "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'race_gate' AND wait_event = 'PgSleep'" 1
PGAPPNAME=race_holder psql -XAtq -c "BEGIN; SELECT complete_job_runs('W', '{$RACE_ID}', '{1}', '{0}', '{1}'); SELECT pg_advisory_xact_lock($GATE_KEY); COMMIT;" >/dev/null &
HOLDER=$!
PIDS+=("$HOLDER")
wait_for "the completion holds its row" 10 sql_eq "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'race_holder' AND wait_event_type = 'Lock' AND wait_event = 'advisory'" 1
PGAPPNAME=race_scheduler psql -XAtq -v ON_ERROR_STOP=1 -c "SELECT schedule_due_jobs()" >/dev/null &
SCHED=$!
PIDS+=("$SCHED")
sched_done_or_waiting() {
    ! kill -0 "$SCHED" 2>/dev/null ||
        sql_eq "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'race_scheduler' AND wait_event_type = 'Lock'" 1
}
wait_for "the scheduler ran while the completion was uncommitted" 20 sched_done_or_waiting
sql "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'race_gate'" >/dev/null
wait "$GATE" || true
forget_pid "$GATE"
wait "$HOLDER" || fail "the completion did not commit"
forget_pid "$HOLDER"
wait "$SCHED" || fail "schedule_due_jobs() failed"
forget_pid "$SCHED"
check "the completed chunk stays done" "succeeded" "$(sql "SELECT status FROM job_runs WHERE id = $RACE_ID")"
check "the scheduler did not queue the completed chunk again" "0" "$(sql "
    SELECT count(*) FROM job_runs r WHERE r.symbol = 'RACE' AND r.status = 'queued'
       AND EXISTS (SELECT 1 FROM job_runs s WHERE s.job_def_id = r.job_def_id AND s.status = 'succeeded'
                      AND s.range_start <= r.range_start AND s.range_end >= r.range_end)")"
finish
