#!/usr/bin/env bash
# The queue's contract, checked at the SQL level where operators and every
# daemon meet it: the fence, the claim order and filters, the scheduler.
. "$(dirname "$0")/lib.sh"

pg_start
bf migrate >/dev/null
# Operators' sessions here run on New York time, so a bare date literal is a
# trading day's start, as for backfilld's own --from/--to.
export PGTZ=America/New_York

# --- the fence: a stale worker can change nothing ----------------------------
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, backfill_from, backfill_to)
     VALUES ('AAPL', 'h1', 'fetch_historical', '2024-01-01', '2024-02-01')"
check "enqueue_range queues one January run" "1" "$(sql "SELECT enqueue_range(1, '2024-01-01', '2024-02-01')")"
check "claim by hand with no arguments claims one" "1" "$(sql "SELECT count(*) FROM claim_queued_job()")"
sql "UPDATE job_runs SET status = 'queued', attempt = 0, locked_by = NULL, locked_until = NULL"
check "worker A claims attempt 1" "1|A" "$(sql "SELECT attempt, locked_by FROM claim_queued_job('A', 5, 30)")"
check "nothing left for B" "0" "$(sql "SELECT count(*) FROM claim_queued_job('B', 5, 30)")"
sql "UPDATE job_runs SET locked_until = now() - interval '1 second'"   # A stops renewing
check "rescue puts it back" "1" "$(sql "SELECT rescue_expired_job_runs(0, 0)")"
check "rescue recorded why" "true|A" "$(sql "SELECT (errors->0->>'rescued'), errors->0->>'worker' FROM job_runs")"
check "B claims attempt 2" "2|B" "$(sql "SELECT attempt, locked_by FROM claim_queued_job('B', 5, 30)")"
check "stale A cannot complete attempt 1" "0" "$(sql "SELECT count(*) FROM complete_job_runs('A', '{1}', '{1}', '{5}', '{1}')")"
check "stale A cannot complete claiming attempt 2 either" "0" "$(sql "SELECT count(*) FROM complete_job_runs('A', '{1}', '{2}', '{5}', '{1}')")"
check "stale A cannot fail it" "" "$(sql "SELECT fail_job_run('A', 1, 1, 'x', true)")"
check "stale A cannot release it" "0" "$(sql "SELECT release_job_runs('A', '{1}', '{1}')")"
check "stale A cannot renew it" "0" "$(sql "SELECT count(*) FROM renew_job_leases('A', '{1}', '{1}', '{0}', 30)")"
check "B still holds it, running" "running|B|2" "$(sql "SELECT status, locked_by, attempt FROM job_runs")"
# B's writer has stored its 7 bars (a completion counts what is stored in the run's range).
sql "INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, trade_count, vwap)
     SELECT 'AAPL', 'h1', '2024-01-02T14:00:00Z'::timestamptz + g * interval '1 hour', 1, 1, 1, 1, 1, 1, 1
       FROM generate_series(0, 6) g"
check "B completes it" "1" "$(sql "SELECT count(*) FROM complete_job_runs('B', '{1}', '{2}', '{7}', '{1}')")"
check "succeeded with B's numbers" "succeeded|7|" "$(sql "SELECT status, bars_written, locked_by FROM job_runs")"
check "B completing again (a resent write) gets its id back" "1" "$(sql "SELECT count(*) FROM complete_job_runs('B', '{1}', '{2}', '{7}', '{1}')")"
check "but stale A still gets nothing" "0" "$(sql "SELECT count(*) FROM complete_job_runs('A', '{1}', '{2}', '{5}', '{1}')")"
check "and nothing changed" "succeeded|7|2" "$(sql "SELECT status, bars_written, attempt FROM job_runs")"
check "claims history: one row per attempt" "1:A,2:B" "$(sql "SELECT string_agg(attempt || ':' || worker, ',' ORDER BY attempt) FROM job_run_claims WHERE worker IN ('A', 'B')")"
# A completion whose earlier pages were lost (a commit lost in a crash): fewer
# bars stored than written. The run is queued again with the reason, not succeeded.
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, backfill_from, backfill_to)
     VALUES ('MSFT', 'h1', 'fetch_historical', '2024-01-01', '2024-02-01')"
sql "SELECT enqueue_range(2, '2024-01-01', '2024-02-01')" >/dev/null
GAP=$(sql "SELECT id FROM claim_queued_job('C', 1, 30)")
sql "INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume, trade_count, vwap)
     VALUES ('MSFT', 'h1', '2024-01-20T14:00:00Z', 1, 1, 1, 1, 1, 1, 1)"
check "a completion with bars missing completes nothing" "0" \
    "$(sql "SELECT count(*) FROM complete_job_runs('C', '{$GAP}', '{1}', '{300}', '{2}')")"
check "it is queued again, saying what is missing" "queued|1 of the 300 bars written are stored: pages were lost with a database crash or failover; fetched again|" \
    "$(sql "SELECT status, last_error, locked_by FROM job_runs WHERE id = $GAP")"
# Schema 8: p_here, the run's bars in the completing transaction. Some written before it
# (250 of 300 here): counted, and the same gap found.
check "claimed again" "$GAP" "$(sql "SELECT id FROM claim_queued_job('C', 1, 30)")"
check "bars written before the completing transaction are counted: the gap again" "0" \
    "$(sql "SELECT count(*) FROM complete_job_runs('C', '{$GAP}', '{2}', '{300}', '{2}', '{250}')")"
check "queued again" "queued|2" "$(sql "SELECT status, attempt FROM job_runs WHERE id = $GAP")"
# All 300 in the completing transaction: they commit with the completion or not at all,
# so there is nothing to count (this test stored 1, so a count would refuse it).
check "claimed a third time" "$GAP" "$(sql "SELECT id FROM claim_queued_job('C', 1, 30)")"
check "every bar in the completing transaction: completed without a count" "1" \
    "$(sql "SELECT count(*) FROM complete_job_runs('C', '{$GAP}', '{3}', '{300}', '{2}', '{300}')")"
check "succeeded with its 300 bars" "succeeded|300" "$(sql "SELECT status, bars_written FROM job_runs WHERE id = $GAP")"

# --- claim order and filters ------------------------------------------------
sql "TRUNCATE job_runs, job_definitions, job_run_claims RESTART IDENTITY CASCADE"
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, priority, backfill_from, backfill_to)
     VALUES ('LOW', 'd1', 'fetch_historical', 0, '2020-01-01', '2023-01-01'),
            ('HIGH', 'd1', 'fetch_historical', 0, '2020-01-01', '2023-01-01'),
            ('OFF', 'd1', 'fetch_historical', 9, '2020-01-01', '2023-01-01')"
sql "SELECT enqueue_range(id, backfill_from, backfill_to) FROM job_definitions" >/dev/null
sql "UPDATE job_definitions SET priority = 5 WHERE symbol = 'HIGH'"
sql "UPDATE job_definitions SET enabled = false WHERE symbol = 'OFF'"
check "re-prioritising a definition moves its queued runs" "5,5,5" "$(sql "SELECT string_agg(priority::text, ',') FROM job_runs WHERE symbol = 'HIGH'")"
check "highest priority first, never a disabled one" "HIGH,HIGH,HIGH,LOW" "$(sql "SELECT string_agg(symbol, ',' ORDER BY priority DESC, id) FROM claim_queued_job('W', 4, 30)")"
sql "UPDATE job_runs SET run_after = now() + interval '1 hour' WHERE symbol = 'LOW' AND status = 'queued'"
check "run_after in the future is not claimable" "0" "$(sql "SELECT count(*) FROM claim_queued_job('W', 10, 30)")"
check "a failed attempt with attempts left is queued again" "queued" "$(sql "SELECT fail_job_run('W', id, attempt, 'boom', true, 1000, 5000) FROM job_runs WHERE symbol = 'HIGH' ORDER BY id LIMIT 1")"
check "a permanent failure is final" "failed" "$(sql "SELECT fail_job_run('W', id, attempt, 'HTTP 400', false) FROM job_runs WHERE symbol = 'HIGH' AND status = 'running' ORDER BY id LIMIT 1")"
check "release gives the running runs back" "2" "$(sql "SELECT release_job_runs('W', array_agg(id), array_agg(attempt)) FROM job_runs WHERE status = 'running'")"
check "without spending their attempt" "queued|0|0" "$(sql "SELECT status, attempt, count(*) FILTER (WHERE locked_by IS NOT NULL) FROM job_runs WHERE symbol = 'LOW' AND id = (SELECT min(id) FROM job_runs WHERE symbol = 'LOW') GROUP BY 1, 2")"
check "the operators' steering SQL from DESIGN.md runs" "0" "$(sql "UPDATE job_definitions SET enabled = false WHERE symbol LIKE 'US_BATCH_%';
    UPDATE job_definitions SET enabled = true WHERE symbol IN ('AAPL','MSFT') AND timeframe = 'h1';
    UPDATE job_runs SET status = 'cancelled', finished_at = now(), updated_at = now()
     WHERE job_def_id IN (SELECT id FROM job_definitions WHERE symbol LIKE 'US_BATCH_%') AND status = 'queued';
    SELECT count(*) FROM claim_queued_job() WHERE false")"

# --- the scheduler -----------------------------------------------------------
sql "TRUNCATE job_runs, job_definitions, job_run_claims RESTART IDENTITY CASCADE"
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, backfill_from, backfill_to)
     VALUES ('AAPL', 'h1', 'fetch_historical', '2024-01-01', '2025-01-01')"
check "a one-year h1 definition yields 12 runs" "12" "$(sql "SELECT schedule_due_jobs()")"
check "monthly chunks, edge to edge" "2024-01-01 2024-02-01|2024-12-01 2025-01-01|12|0" "$(sql "SET TimeZone = 'UTC';
    SELECT (SELECT to_char(range_start, 'YYYY-MM-DD') || ' ' || to_char(range_end, 'YYYY-MM-DD') FROM job_runs ORDER BY range_start LIMIT 1),
           (SELECT to_char(range_start, 'YYYY-MM-DD') || ' ' || to_char(range_end, 'YYYY-MM-DD') FROM job_runs ORDER BY range_start DESC LIMIT 1),
           count(*), count(*) FILTER (WHERE r.range_end <> (SELECT min(x.range_start) FROM job_runs x WHERE x.range_start > r.range_start) )
      FROM job_runs r")"
check "scheduling twice adds nothing" "0" "$(sql "SELECT schedule_due_jobs()")"
sql "UPDATE job_runs SET status = 'succeeded'"
check "covered ranges are not queued again" "0" "$(sql "SELECT schedule_due_jobs()")"
sql "UPDATE job_runs SET status = 'failed' WHERE range_start = '2024-02-01'"
check "a finally failed chunk is not retried by the scheduler" "0" "$(sql "SELECT schedule_due_jobs()")"
check "an operator's enqueue does retry it" "1" "$(sql "SELECT enqueue_range(1, '2024-02-01', '2024-03-01')")"
sql "UPDATE job_runs SET status = 'succeeded' WHERE status = 'queued'"
sql "UPDATE job_runs SET status = 'cancelled' WHERE range_start = '2024-04-01'"
check "a cancelled chunk stays cancelled" "0" "$(sql "SELECT schedule_due_jobs()")"
# An operator deletes March's bars and marks its run for a redo by deleting it.
sql "DELETE FROM bars WHERE ts >= '2024-03-01' AND ts < '2024-04-01'; DELETE FROM job_runs WHERE range_start = '2024-03-01'"
check "only March is queued again" "1|2024-03-01 2024-04-01" "$(sql "SELECT schedule_due_jobs(); SET TimeZone = 'UTC';
    SELECT count(*) || '|' || string_agg(to_char(range_start, 'YYYY-MM-DD') || ' ' || to_char(range_end, 'YYYY-MM-DD'), ',') FROM job_runs WHERE status = 'queued'" | tail -1)"
sql "UPDATE job_runs SET status = 'succeeded' WHERE status = 'queued'"
sql "UPDATE job_definitions SET backfill_from = '2023-11-01'"
check "moving backfill_from earlier queues only the new months" "2" "$(sql "SELECT schedule_due_jobs()")"
sql "UPDATE job_definitions SET enabled = false"
sql "UPDATE job_runs SET status = 'succeeded' WHERE status = 'queued'"
check "a disabled definition is not scheduled" "0" "$(sql "UPDATE job_definitions SET backfill_from = '2023-01-01'; SELECT schedule_due_jobs()" | tail -1)"

# Coverage is kept (job_coverage), not recomputed: its edge cases.
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, backfill_from, backfill_to)
     VALUES ('COV', 'h1', 'fetch_historical', '2024-01-01', '2024-04-01')"
check "three monthly chunks" "3" "$(sql "SELECT schedule_due_jobs()")"
sql "UPDATE job_runs SET status = 'failed', finished_at = now() WHERE symbol = 'COV' AND range_start = '2024-01-01';
     UPDATE job_runs SET status = 'succeeded', finished_at = now() WHERE symbol = 'COV' AND status = 'queued'"
check "an operator retries the failed month" "1" \
    "$(sql "SELECT enqueue_range(id, '2024-01-01', '2024-02-01') FROM job_definitions WHERE symbol = 'COV'")"
sql "UPDATE job_runs SET status = 'succeeded', finished_at = now() WHERE symbol = 'COV' AND status = 'queued'"
sql "DELETE FROM job_runs WHERE symbol = 'COV' AND status = 'failed'"
check "deleting one of two runs of a chunk leaves it covered by the other" "0" "$(sql "SELECT schedule_due_jobs()")"
check "pruning deletes the finished runs" "3" "$(sql "UPDATE job_runs SET finished_at = now() - interval '40 days' WHERE symbol = 'COV';
    SELECT prune_job_runs('30 days', 1000)" | tail -1)"
check "a pruned chunk stays covered: the scheduler queues nothing" "0" "$(sql "SELECT schedule_due_jobs()")"
check "nor does an operator's enqueue" "0" \
    "$(sql "SELECT enqueue_range(id, '2024-01-01', '2024-04-01') FROM job_definitions WHERE symbol = 'COV'")"
check "unless forced" "3" \
    "$(sql "SELECT enqueue_range(id, '2024-01-01', '2024-04-01', true) FROM job_definitions WHERE symbol = 'COV'")"
sql "UPDATE job_runs SET status = 'succeeded', finished_at = now() WHERE symbol = 'COV'"
sql "SELECT schedule_due_jobs()" >/dev/null
sql "UPDATE job_definitions SET feed = 'iex' WHERE symbol = 'COV'"
check "another feed is another series: its history is queued again" "3|iex" \
    "$(sql "SELECT schedule_due_jobs(); SELECT count(*) || '|' || string_agg(DISTINCT feed, ',') FROM job_runs WHERE symbol = 'COV' AND status = 'queued'" | tail -1)"
check "the counts kept match the table" \
    "$(sql "SELECT string_agg(status || ':' || n, ',' ORDER BY status) FROM (SELECT status, count(*) n FROM job_runs GROUP BY 1) x")" \
    "$(sql "SELECT string_agg(status || ':' || n, ',' ORDER BY status) FROM (SELECT status, sum(n) n FROM job_run_totals GROUP BY 1 HAVING sum(n) <> 0) x")"
sql "DELETE FROM job_definitions WHERE symbol = 'COV'"

# Intraday: one run per refresh interval, never two at once, from the last bar.
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, refresh_interval, feed)
     VALUES ('MSFT', 'm1', 'fetch_intraday', '1 minute', 'iex')"
sql "INSERT INTO bars (symbol, timeframe, feed, ts, open, high, low, close, volume, trade_count, vwap)
     VALUES ('MSFT', 'm1', 'iex', now() - interval '10 minutes', 1, 1, 1, 1, 1, 1, 1),
            ('MSFT', 'm1', 'sip', now() - interval '1 minute', 1, 1, 1, 1, 1, 1, 1)"
check "an intraday definition gets one run" "1" "$(sql "SELECT schedule_due_jobs()")"
check "it starts at the last stored bar of its own series (iex, not sip)" "t" \
    "$(sql "SELECT range_start = (SELECT max(ts) FROM bars WHERE symbol = 'MSFT' AND feed = 'iex') FROM job_runs WHERE symbol = 'MSFT'")"
check "never two at once" "0" "$(sql "SELECT schedule_due_jobs()")"
sql "UPDATE job_runs SET status = 'succeeded' WHERE symbol = 'MSFT'"
check "not again within the interval" "0" "$(sql "SELECT schedule_due_jobs()")"
sql "UPDATE job_runs SET created_at = now() - interval '2 minutes' WHERE symbol = 'MSFT';
     INSERT INTO bars (symbol, timeframe, feed, ts, open, high, low, close, volume, trade_count, vwap, final)
     VALUES ('MSFT', 'm1', 'iex', now() - interval '30 minutes', 1, 1, 1, 1, 1, 1, 1, false)"
check "again once the interval has passed" "1" "$(sql "SELECT schedule_due_jobs()")"
check "from the first bar not final yet, to fetch it again" "t" \
    "$(sql "SELECT range_start = (SELECT ts FROM bars WHERE symbol = 'MSFT' AND NOT final) FROM job_runs WHERE symbol = 'MSFT' AND status = 'queued'")"

# Only one scheduler at a time: while another session holds the lock, the call returns 0 at once.
# The holder keeps the lock until it is cancelled below (its rollback releases it).
PGAPPNAME=t_queue_sql_holder psql -XAtq -c "BEGIN; SELECT pg_advisory_xact_lock(hashtext('backfilld.schedule_due_jobs')); SELECT pg_sleep(60); COMMIT;" >/dev/null 2>&1 &
HOLDER=$!
PIDS+=("$HOLDER")
wait_for "the other scheduler holds the lock" 10 sql_eq "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted" 1
sql "UPDATE job_runs SET created_at = now() - interval '2 minutes', status = 'succeeded' WHERE symbol = 'MSFT'"
start=$(now_ms)
check "a concurrent call returns 0" "0" "$(sql "SELECT schedule_due_jobs()")"
dt=$(($(now_ms) - start))
check_cmd "and returns at once (${dt} ms)" test "$dt" -lt $(($(scaled 2) * 1000))
check "the holder still held the lock" "1" \
    "$(sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 't_queue_sql_holder' AND wait_event = 'PgSleep'")"
sql "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 't_queue_sql_holder'" >/dev/null
wait "$HOLDER" || true
forget_pid "$HOLDER"
wait_for "the lock is released" 10 sql_eq "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'" 0
check "with the lock free, the same call schedules the due run" "1" "$(sql "SELECT schedule_due_jobs()")"
# --- a worker's runs are found by key -------------------------------------------
# Statistics gathered while every run was queued (as at the start of every
# backfill) say none is running. Before schema 9 the planner took status =
# 'running' for an index scan of a row or two, and scanned the whole id array
# again for each running run found: a renewal of 2,000 runs rejected 4
# million pairs. auto_explain prints each statement's plan as it ran; no join
# may reject more pairs than there are runs.
sql "TRUNCATE job_runs, job_definitions, job_run_claims RESTART IDENTITY CASCADE"
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, backfill_from, backfill_to)
     SELECT 'K' || i, 'h1', 'fetch_historical', '2023-01-01', '2024-09-01' FROM generate_series(1, 100) i"
check "100 definitions × 20 months queued" "2000" "$(sql "SELECT sum(enqueue_range(id, backfill_from, backfill_to)) FROM job_definitions")"
sql "ANALYZE job_runs"
check "one worker holds them all" "2000" "$(sql "SELECT count(*) FROM claim_queued_job('K', 2000, 300)")"
psql -XAtq -v ON_ERROR_STOP=1 >"$T/by_key.out" 2>"$T/by_key.plans" <<'EOF'
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_analyze = on;
SET auto_explain.log_timing = off;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_level = notice;
SELECT count(*) FROM renew_job_leases('K', (SELECT array_agg(id) FROM job_runs),
    (SELECT array_agg(attempt) FROM job_runs), (SELECT array_agg(0::bigint) FROM job_runs), 300);
SELECT count(*) FROM complete_job_runs('K', (SELECT array_agg(id) FROM job_runs WHERE id <= 1000),
    (SELECT array_agg(attempt) FROM job_runs WHERE id <= 1000), (SELECT array_agg(0::bigint) FROM job_runs WHERE id <= 1000),
    (SELECT array_agg(1) FROM job_runs WHERE id <= 1000), (SELECT array_agg(0::bigint) FROM job_runs WHERE id <= 1000));
SELECT release_job_runs('K', (SELECT array_agg(id) FROM job_runs WHERE id > 1000),
    (SELECT array_agg(attempt) FROM job_runs WHERE id > 1000));
EOF
check "renewed 2,000, completed 1,000, released 1,000" "2000 1000 1000" "$(paste -sd' ' "$T/by_key.out")"
check_cmd "auto_explain printed the functions' own statements" grep -q "UPDATE job_runs r" "$T/by_key.plans"
worst=$(grep -o 'Rows Removed by Join Filter: [0-9]*' "$T/by_key.plans" | awk '$NF > m { m = $NF } END { print m + 0 }')
check_cmd "no join rejected more pairs than there are runs (worst: $worst)" test "$worst" -le 2000

finish
