#!/usr/bin/env bash
# Upgrading a queue that is already in use to schema 4: `backfilld migrate`
# on a database at version 3 with definitions and runs builds what schema 4
# keeps (backfilld_rebuild_queue_state): the paused flags of disabled
# definitions' queued runs, the counts, and each definition's coverage from
# the runs of its own series. Version 3 is made by applying sql/001-003 as
# migrate would, one transaction each, recorded in schema_migrations.
. "$(dirname "$0")/lib.sh"

pg_start
sql "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                                     applied_at timestamptz NOT NULL DEFAULT now())"
for f in 001_schema 002_least_privilege 003_complete_checks_bars; do
    psql -XAtq -v ON_ERROR_STOP=1 -1 -f "$SRC_DIR/sql/$f.sql" >/dev/null
    sql "INSERT INTO schema_migrations (version, name) VALUES (${f%%_*}, '$f.sql')"
done
check "the database is at version 3" "3" "$(sql "SELECT max(version) FROM schema_migrations")"

# Three h1 definitions over 2024 (12 monthly chunks each), queued by version
# 3's own enqueue_range; then the queue moves on.
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, backfill_from, backfill_to)
     VALUES ('ON', 'h1', 'fetch_historical', '2024-01-01', '2025-01-01'),
            ('OFF', 'h1', 'fetch_historical', '2024-01-01', '2025-01-01'),
            ('FEED', 'h1', 'fetch_historical', '2024-01-01', '2025-01-01')"
sql "SELECT enqueue_range(id, backfill_from, backfill_to) FROM job_definitions" >/dev/null
sql "UPDATE job_runs SET status = 'succeeded', bars_written = 100, finished_at = now()
      WHERE range_start < '2024-07-01';
     UPDATE job_runs SET status = 'failed', finished_at = now()
      WHERE symbol = 'ON' AND range_start = '2024-07-01';
     UPDATE job_runs SET status = 'succeeded', bars_written = 100, finished_at = now()
      WHERE symbol = 'FEED';
     UPDATE job_definitions SET enabled = false WHERE symbol = 'OFF';
     UPDATE job_definitions SET feed = 'iex' WHERE symbol = 'FEED'"

# Bars stored before schema 6 (keyed without feed), of a sip and an iex
# definition; and a daemon role, with a name that needs quoting, that may run
# the scheduler (schema 6 replaces schedule_due_jobs).
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, feed) VALUES ('IEX', 'h1', 'fetch_historical', 'iex');
     INSERT INTO bars VALUES ('ON', 'h1', '2024-01-02 15:00Z', 1, 1, 1, 1, 1, 1, 1),
                             ('IEX', 'h1', '2024-01-02 15:00Z', 2, 2, 2, 2, 2, 2, 2);
     CREATE ROLE \"backfilld-daemon\" LOGIN;
     GRANT EXECUTE ON FUNCTION schedule_due_jobs(integer) TO \"backfilld-daemon\";
     GRANT EXECUTE ON FUNCTION complete_job_runs(text, bigint[], integer[], bigint[], integer[]) TO \"backfilld-daemon\""
check "migrate applies what is new" "schema at version $SCHEMA_LATEST ($((SCHEMA_LATEST - 3)) migrations applied)" "$(bf migrate)"
check "old bars are labelled with their definition's series, fetched at an unknown time, final" \
    "IEX|iex|raw|true|true ON|sip|raw|true|true" \
    "$(sql "SELECT string_agg(symbol || '|' || feed || '|' || adjustment || '|' || final || '|' || (fetched_at IS NULL), ' '
                              ORDER BY symbol) FROM bars")"
check "keyed by series now" "symbol, timeframe, feed, adjustment, ts" \
    "$(sql "SELECT string_agg(a.attname, ', ' ORDER BY k.n) FROM pg_index i
              CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = 'bars'::regclass AND i.indisprimary")"
check "the role that could run the old scheduler can run the new one" "t" \
    "$(sql "SELECT has_function_privilege('backfilld-daemon', 'schedule_due_jobs(integer, interval, interval)', 'EXECUTE')")"
check "and the completion made anew in schema 8" "t|f" \
    "$(sql "SELECT has_function_privilege('backfilld-daemon', 'complete_job_runs(text, bigint[], integer[], bigint[], integer[], bigint[])', 'EXECUTE'),
                   has_function_privilege('public', 'complete_job_runs(text, bigint[], integer[], bigint[], integer[], bigint[])', 'EXECUTE')")"
check "the calls made anew in schema 9 still run as their owner, on the schema's search_path" \
    "complete_job_runs:true:{\"search_path=public, pg_temp\"} release_job_runs:true:{\"search_path=public, pg_temp\"} renew_job_leases:true:{\"search_path=public, pg_temp\"}" \
    "$(sql "SELECT string_agg(proname || ':' || prosecdef || ':' || proconfig::text, ' ' ORDER BY proname) FROM pg_proc
             WHERE proname IN ('complete_job_runs', 'release_job_runs', 'renew_job_leases')")"
check "the disabled definition's queued runs are paused, and only they" "OFF:6" \
    "$(sql "SELECT string_agg(symbol || ':' || n, ',') FROM (SELECT symbol, count(*) n FROM job_runs
             WHERE paused GROUP BY 1) x")"
check "the counts are the table's" \
    "$(sql "SELECT string_agg(status || ':' || paused || ':' || n || ':' || b, ',' ORDER BY status, paused)
              FROM (SELECT status, paused, count(*) n, sum(bars_written) b FROM job_runs GROUP BY 1, 2) x")" \
    "$(sql "SELECT string_agg(status || ':' || paused || ':' || n || ':' || bars, ',' ORDER BY status, paused)
              FROM job_run_totals WHERE n <> 0")"
check "coverage: what has a run, per definition (a feed changed since is another series)" \
    "FEED:{}|{},OFF:{[2024-01-01,2025-01-01)}|{[2024-01-01,2024-07-01)},ON:{[2024-01-01,2025-01-01)}|{[2024-01-01,2024-07-01)}" \
    "$(sql "SET TimeZone = 'UTC';
            SELECT string_agg(d.symbol || ':' || replace(replace(c.known::text, ' 00:00:00+00', ''), chr(34), '') || '|'
                              || replace(replace(c.covered::text, ' 00:00:00+00', ''), chr(34), ''), ',' ORDER BY d.symbol)
              FROM job_coverage c JOIN job_definitions d ON d.id = c.job_def_id
             WHERE d.symbol IN ('ON', 'OFF', 'FEED')" | tail -1)"
# Its year of UTC-cut months again, now cut at New York midnights (schema 6): the
# 12 months, and the five hours of Jan 1 before New York's midnight.
check "the scheduler queues only the definition whose feed changed: its year again, on iex" "13|13" \
    "$(sql "SELECT schedule_due_jobs()")|$(sql "SELECT count(*) FROM job_runs WHERE symbol = 'FEED' AND feed = 'iex' AND status = 'queued'")"
check "a claim takes no paused run" "0" \
    "$(sql "SELECT count(*) FROM claim_queued_job('w', 100, 30) WHERE symbol = 'OFF'")"
check "re-enabling unpauses them" "0" \
    "$(sql "UPDATE job_definitions SET enabled = true WHERE symbol = 'OFF'; SELECT count(*) FROM job_runs WHERE paused" | tail -1)"
finish
