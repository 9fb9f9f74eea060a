#!/usr/bin/env bash
# Adopting the old system's database: job_definitions and job_runs tables of
# a serverless orchestrator are in the way. `migrate` refuses, naming them and
# the way forward, and changes nothing; `migrate --adopt` keeps them as
# legacy_*, creates the schema and imports the definitions (pseudo-symbols
# disabled and listed, unknown timeframes left behind and listed), leaves the
# old runs alone, and the scheduler then queues what is missing.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start
# The old system's tables, as it made them (serial ids, its own names and spellings).
sql "CREATE TABLE job_definitions (id serial PRIMARY KEY, symbol text NOT NULL, timeframe text NOT NULL,
       job_type text NOT NULL, enabled boolean NOT NULL DEFAULT true, created_at timestamptz DEFAULT now());
     CREATE TABLE job_runs (id serial PRIMARY KEY, job_def_id integer REFERENCES job_definitions (id),
       status text NOT NULL, finished_at timestamptz);
     CREATE INDEX job_runs_status_idx ON job_runs (status);
     INSERT INTO job_definitions (symbol, timeframe, job_type, enabled) VALUES
       ('AAPL', '1Day', 'fetch_historical', true),
       ('MSFT', '1Day', 'fetch_historical', true),
       ('NVDA', 'd1', 'fetch_historical', false),
       ('BRK.B', '1Day', 'fetch_historical', true),
       ('US_BATCH_1', '1Day', 'fetch_historical', true),
       ('US_BATCH_2', '1Min', 'fetch_intraday', true),
       ('TSLA', '2Day', 'fetch_historical', true),
       ('AMZN', '1Day', 'fetch_weird', true);
     INSERT INTO job_runs (job_def_id, status, finished_at)
       SELECT 1 + (g % 4), CASE WHEN g % 3 = 0 THEN 'queued' ELSE 'succeeded' END, now()
         FROM generate_series(1, 25) g"
before=$(sql "SELECT md5(string_agg(d::text, '|' ORDER BY id)) FROM job_definitions d")

rc=0
bf migrate >"$T/refuse.out" 2>&1 || rc=$?
check "migrate refuses (exit 65)" "65" "$rc"
check_cmd "it names both tables" grep -q "tables named job_definitions job_runs, not made by backfilld" "$T/refuse.out"
check_cmd "it names the way forward" grep -q "backfilld migrate --adopt" "$T/refuse.out"
check "nothing was changed" "$before|0" \
    "$(sql "SELECT md5(string_agg(d::text, '|' ORDER BY id)), (SELECT count(*) FROM pg_tables WHERE tablename LIKE 'legacy_%' OR tablename = 'schema_migrations') FROM job_definitions d")"

bf migrate --adopt --from 2024-01-01 >"$T/adopt.out" 2>&1 || { cat "$T/adopt.out"; fail "migrate --adopt"; }
cat "$T/adopt.out"
check_cmd "it says what it kept" grep -q "kept the old tables as legacy_job_definitions legacy_job_runs" "$T/adopt.out"
check_cmd "it says what it imported" grep -q "imported 6 definitions (3 enabled)" "$T/adopt.out"
check_cmd "it lists the pseudo-symbols imported disabled" \
    grep -q "imported disabled, not ticker symbols: US_BATCH_1 US_BATCH_2" "$T/adopt.out"
check_cmd "it lists what it left behind" \
    grep -q "not imported (unknown timeframe or job type, as symbol/timeframe/job_type): 2 rows: AMZN/1Day/fetch_weird TSLA/2Day/fetch_historical" "$T/adopt.out"
check_cmd "it leaves the old runs" grep -q "left 25 old runs in legacy_job_runs" "$T/adopt.out"
check "the old rows are all kept" "8|25|$before" \
    "$(sql "SELECT (SELECT count(*) FROM legacy_job_definitions), (SELECT count(*) FROM legacy_job_runs), (SELECT md5(string_agg(d::text, '|' ORDER BY id)) FROM legacy_job_definitions d)")"
check "the old index went with its table" "legacy_job_runs" \
    "$(sql "SELECT tablename FROM pg_indexes WHERE indexname = 'legacy_job_runs_status_idx'")"
check "the definitions, as imported" \
    "AAPL|d1|fetch_historical|t|2024-01-01 05:00:00+00
BRK.B|d1|fetch_historical|t|2024-01-01 05:00:00+00
MSFT|d1|fetch_historical|t|2024-01-01 05:00:00+00
NVDA|d1|fetch_historical|f|2024-01-01 05:00:00+00
US_BATCH_1|d1|fetch_historical|f|2024-01-01 05:00:00+00
US_BATCH_2|m1|fetch_intraday|f|" \
    "$(sql "SET TimeZone = 'UTC'; SELECT symbol, timeframe, job_type, enabled, backfill_from FROM job_definitions ORDER BY symbol")"
check "no run imported" "0" "$(sql "SELECT count(*) FROM job_runs")"
check "migrate afterwards is an ordinary migrate" "schema at version $SCHEMA_LATEST (0 migrations applied)" "$(bf migrate)"

# The scheduler works out what is missing, for the enabled definitions only.
export BACKFILLD_RATE_LIMIT=600000
daemon_start d1 --until-idle
daemon_wait "$DAEMON_PID" 120
check "the daemon exits 0" "0" "$DAEMON_RC"
check "runs for the enabled definitions only, all succeeded" "AAPL BRK.B MSFT|0" \
    "$(sql "SELECT string_agg(DISTINCT symbol, ' ' ORDER BY symbol), count(*) FILTER (WHERE status <> 'succeeded') FROM job_runs")"
load_expected d1 --symbols AAPL,BRK.B,MSFT --timeframe 1Day --start "$(ny 2024-01-01)" \
    --end "$(sql "SELECT to_char(max(range_end) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM job_runs")"
sql "DELETE FROM expected_bars WHERE ts >= (SELECT max(range_end) FROM job_runs)"
check_bars_exact

# A second adopt finds nothing in the way.
bf migrate --adopt >"$T/again.out" 2>&1
check_cmd "adopt again: nothing to adopt" grep -q "nothing to adopt" "$T/again.out"
finish
