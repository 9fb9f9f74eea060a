#!/usr/bin/env bash
# Costs that do not grow with history (issue #9), at a reduced size: 500 m1
# definitions × 10 years (~261k runs). Costs are checked as rows of job_runs
# read (pg_stat_xact_user_tables: exact, whatever the machine's load), with
# one timing ratio measured in the same run:
#  - scheduling again with nothing to do reads no run at all, and one changed
#    definition costs one definition's runs;
#  - a claim does not walk a disabled backlog (runs of disabled definitions,
#    at a higher priority, ahead of everything in the old claim's index);
#  - `status --json` reads a bounded number of runs;
#  - an open-ended definition whose end moved has its last run extended, not
#    a new run added;
#  - pruning (by the daemon, and by hand) deletes old runs and keeps their
#    coverage: nothing is queued again.
# Leases while the scheduler is slow: t_slow_scheduler.
. "$(dirname "$0")/lib.sh"

N=${SCALE_DEFS:-500}
pg_start
bf migrate >/dev/null

# xact_reads "SELECT … AS n": runs it in a transaction; prints "n|rows of job_runs it read".
xact_reads() {
    psql -XAtq -v ON_ERROR_STOP=1 <<SQL
BEGIN;
$1 \gset r_
SELECT :'r_n' || '|' || (SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)
                           FROM pg_stat_xact_user_tables WHERE relname = 'job_runs');
COMMIT;
SQL
}
# job_runs_reads: rows of job_runs read by every session so far (flushed stats).
job_runs_reads() {
    sql "SELECT pg_stat_clear_snapshot(); SELECT seq_tup_read + coalesce(idx_tup_fetch, 0)
           FROM pg_stat_user_tables WHERE relname = 'job_runs'" | tail -1
}

sql "INSERT INTO job_definitions (symbol, timeframe, job_type, backfill_from, backfill_to)
     SELECT format('S%s', lpad(i::text, 4, '0')), 'm1', 'fetch_historical', '2016-01-01', '2026-01-01'
       FROM generate_series(1, $N) AS i"
PER=$(sql "SELECT count(*) FROM backfill_chunks('m1', '2016-01-01', '2026-01-01')")
EXPECT=$((PER * N))

# --- the scheduler ------------------------------------------------------------
t0=$(now_ms)
first=$(sql "SELECT schedule_due_jobs()")
t1=$(now_ms)
check "the first pass queues every chunk of every definition" "$EXPECT" "$first"
check "one run per chunk" "$EXPECT" "$(sql "SELECT count(*) FROM job_runs")"
t2=$(now_ms)
check "scheduling again adds nothing and reads no run" "0|0" "$(xact_reads "SELECT schedule_due_jobs() AS n")"
t3=$(now_ms)
log "first pass $((t1 - t0)) ms for $EXPECT runs; the pass with nothing to do $((t3 - t2)) ms (psql start included)"
check_cmd "the pass with nothing to do takes under a fifth of the first ($((t3 - t2)) vs $((t1 - t0)) ms)" \
    test $(((t3 - t2) * 5)) -lt $((t1 - t0))
check "nor does a third" "0|0" "$(xact_reads "SELECT schedule_due_jobs() AS n")"

sql "UPDATE job_definitions SET backfill_from = '2015-01-01' WHERE symbol = 'S0001'"
NEW=$(sql "SELECT count(*) FROM backfill_chunks('m1', '2015-01-01', '2016-01-01')")
IFS='|' read -r n reads <<<"$(xact_reads "SELECT schedule_due_jobs() AS n")"
check "a changed definition gets the chunks it gained" "$NEW" "$n"
check_cmd "and costs at most one definition's runs ($reads rows read, $PER per definition)" test "$reads" -le "$PER"
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, backfill_from, backfill_to)
     VALUES ('NEWDEF', 'm1', 'fetch_historical', '2016-01-01', '2026-01-01')"
check "a new definition gets all its chunks, reading no run" "$PER|0" "$(xact_reads "SELECT schedule_due_jobs() AS n")"

# --- claims past a disabled backlog -------------------------------------------
sql "UPDATE job_definitions SET priority = 9, enabled = false WHERE id % 2 = 0"
IFS='|' read -r n reads <<<"$(xact_reads "SELECT count(*) AS n FROM claim_queued_job('w1', 100, 30)")"
check "a claim of 100 gets 100" "100" "$n"
check_cmd "without walking the $((EXPECT / 2)) disabled runs ahead of it ($reads rows read)" test "$reads" -lt 1000
check "all of enabled definitions" "0" \
    "$(sql "SELECT count(*) FROM job_runs r JOIN job_definitions d ON d.id = r.job_def_id
             WHERE r.status = 'running' AND NOT d.enabled")"
# Five runs of disabled definitions wait out a retry: they are neither ready nor counted twice.
sql "UPDATE job_runs SET attempt = 1, run_after = now() + interval '1 hour'
      WHERE id IN (SELECT id FROM job_runs WHERE status = 'queued' AND paused ORDER BY id LIMIT 5)"
check "status counts the ready runs exactly" \
    "$(sql "SELECT count(*) FROM job_runs r JOIN job_definitions d ON d.id = r.job_def_id
             WHERE r.status = 'queued' AND d.enabled AND r.run_after <= now()")" \
    "$(bf status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"]["queued_ready"])')"
check "status counts the disabled backlog from kept counts" \
    "$(sql "SELECT count(*) FROM job_runs r JOIN job_definitions d ON d.id = r.job_def_id
             WHERE r.status = 'queued' AND NOT d.enabled")" \
    "$(bf status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"]["queued_disabled"])')"
sql "UPDATE job_definitions SET enabled = true"

# --- status reads a bounded number of runs --------------------------------------
before=$(job_runs_reads)
bf status --json >"$T/status.json"
# The status session's counters reach the shared stats when it exits: wait for them.
wait_for "the status session's reads counted" 10 test "$(job_runs_reads)" -gt "$before"
after=$(job_runs_reads)
check_cmd "status --json read $((after - before)) rows of job_runs, not the $EXPECT there are" \
    test $((after - before)) -lt $((EXPECT / 5))
check "status counts every run" "$((EXPECT + NEW + PER))" \
    "$(python3 -c 'import json,sys; r = json.load(open(sys.argv[1]))["runs"]; print(sum(r[k] for k in ("queued", "running", "succeeded", "failed", "cancelled")))' "$T/status.json")"

# --- an open-ended definition: its tail moves, in at most two runs a chunk --------
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, backfill_from)
     VALUES ('OPEN', 'm1', 'fetch_historical', date_trunc('day', now()) - interval '10 days')"
sql "SELECT schedule_due_jobs()" >/dev/null
sql "UPDATE job_runs SET status = 'succeeded', finished_at = now() WHERE symbol = 'OPEN'"
runs_open=$(sql "SELECT count(*) FROM job_runs WHERE symbol = 'OPEN'")
# An hour passes: the last run's end falls an hour behind the settled horizon.
sql "UPDATE job_runs SET range_end = range_end - interval '1 hour'
      WHERE id = (SELECT id FROM job_runs WHERE symbol = 'OPEN' ORDER BY range_end DESC LIMIT 1)"
sql "SELECT schedule_due_jobs()" >/dev/null
check "the open end moved: one tail run added for what settled since" "$((runs_open + 1))" \
    "$(sql "SELECT count(*) FROM job_runs WHERE symbol = 'OPEN'")"
tail_q="SELECT count(*), bool_and(range_start = (SELECT max(range_end) FROM job_runs WHERE symbol = 'OPEN' AND status = 'succeeded')
                                  AND range_end > now() - interval '18 minutes'
                                  AND range_end <= now() - interval '16 minutes')
          FROM job_runs WHERE symbol = 'OPEN' AND status = 'queued'"
check "only the new hour is queued, up to the settled horizon (SIP: 15 min + 60 s ago)" "1|t" "$(sql "$tail_q")"
covered_before=$(sql "SELECT covered FROM job_coverage c JOIN job_definitions d ON d.id = c.job_def_id WHERE d.symbol = 'OPEN'")
# The tail is fetched; another hour passes: the tail is merged into its chunk's
# head and its row carries the next hour. Still two runs in the chunk.
tail_id=$(sql "SELECT id FROM job_runs WHERE symbol = 'OPEN' AND status = 'queued'")
head_id=$(sql "SELECT id FROM job_runs WHERE symbol = 'OPEN' AND range_end = (SELECT range_start FROM job_runs WHERE id = $tail_id)")
sql "UPDATE job_runs SET status = 'succeeded', finished_at = now(), bars_written = 60,
            range_start = range_start - interval '1 hour', range_end = range_end - interval '1 hour'
      WHERE id = $tail_id;
     UPDATE job_runs SET range_end = range_end - interval '1 hour' WHERE id = $head_id" >/dev/null
sql "SELECT schedule_due_jobs()" >/dev/null
check "a second move adds no run" "$((runs_open + 1))" "$(sql "SELECT count(*) FROM job_runs WHERE symbol = 'OPEN'")"
check "again only the new hour is queued" "1|t" "$(sql "$tail_q")"
check "the merged head kept its tail's bars" "t" \
    "$(sql "SELECT bars_written >= 60 FROM job_runs WHERE symbol = 'OPEN' AND status = 'succeeded' ORDER BY range_end DESC LIMIT 1")"
check "what had settled stayed covered throughout" "t" \
    "$(sql "SELECT c.covered @> '$covered_before'::tstzmultirange - tstzmultirange(tstzrange(now() - interval '3 hours', now()))
              FROM job_coverage c JOIN job_definitions d ON d.id = c.job_def_id WHERE d.symbol = 'OPEN'")"

# --- pruning ------------------------------------------------------------------------
sql "UPDATE job_runs SET status = 'succeeded', locked_by = NULL, locked_until = NULL,
            finished_at = now() - CASE WHEN id % 100 = 0 THEN interval '40 days' ELSE interval '1 day' END"
TOTAL=$(sql "SELECT count(*) FROM job_runs")
OLD=$(sql "SELECT count(*) FROM job_runs WHERE finished_at < now() - interval '30 days'")
sim_start
export BACKFILLD_RUN_RETENTION_DAYS=30 BACKFILLD_SCHEDULE_INTERVAL_MS=1000
daemon_start d1
wait_for "the daemon prunes the $OLD runs older than 30 days" 60 \
    sql_eq "SELECT count(*) FROM job_runs" "$((TOTAL - OLD))"
wait_for "and says so" 10 grep -q '"msg":"old runs pruned"' "$T/d1.log"
check "their claims went with them" "0" \
    "$(sql "SELECT count(*) FROM job_run_claims c WHERE NOT EXISTS (SELECT 1 FROM job_runs r WHERE r.id = c.run_id)")"
check "nothing is queued again" "0" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'queued'")"
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 30
check "the daemon exits 0" "0" "$DAEMON_RC"
unset BACKFILLD_RUN_RETENTION_DAYS

# By hand, everything (as with a short retention): coverage stays.
sql "UPDATE job_runs SET finished_at = now() - interval '40 days'"
while [ "$(sql "SELECT prune_job_runs('30 days', 100000)")" -gt 0 ]; do :; done
check "every run pruned" "0" "$(sql "SELECT count(*) FROM job_runs")"
check "scheduling after pruning queues nothing and reads no run" "0|0" "$(xact_reads "SELECT schedule_due_jobs() AS n")"
check "coverage is kept" "2015-01-01 2026-01-01" \
    "$(sql "SET TimeZone = 'UTC'; SELECT to_char(lower(covered), 'YYYY-MM-DD') || ' ' || to_char(upper(covered), 'YYYY-MM-DD')
              FROM job_coverage c JOIN job_definitions d ON d.id = c.job_def_id WHERE d.symbol = 'S0001'" | tail -1)"
finish
