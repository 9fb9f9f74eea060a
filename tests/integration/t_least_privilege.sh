#!/usr/bin/env bash
# Least privilege: the owner migrates and creates a daemon role with
# `migrate --create-role`; the daemon runs as that role and backfills exactly,
# while the role can change nothing else (definitions, runs directly, other
# tables) and a role without the grant cannot call the queue's functions.
# --print-role-sql prints the same grants for a DBA to run.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start
bf migrate >/dev/null
bf migrate --print-role-sql bf_daemon >"$T/role.sql"
check_cmd "the printed SQL creates the role" grep -q '^CREATE ROLE "bf_daemon" LOGIN;$' "$T/role.sql"
check_cmd "the printed SQL grants the queue functions" grep -q '^GRANT EXECUTE ON FUNCTION claim_queued_job' "$T/role.sql"
check "printing created nothing" "0" "$(sql "SELECT count(*) FROM pg_roles WHERE rolname = 'bf_daemon'")"
check_cmd "migrate --create-role creates it" bf migrate --create-role bf_daemon
check "the role exists and can log in" "t" "$(sql "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'bf_daemon'")"

# The owner queues work; the daemon runs as bf_daemon.
bf enqueue --symbols "AAPL,MSFT,NVDA" --timeframe h1 --from 2024-01-01 --to 2024-03-31 >/dev/null
export BACKFILLD_RATE_LIMIT=600000
BACKFILLD_DATABASE_URL="host=$T/pg port=${PG_PORT:-5432} user=bf_daemon dbname=backfilld" \
    daemon_start d1 --until-idle
daemon_wait "$DAEMON_PID" 120
check "the daemon exits 0 as bf_daemon" "0" "$DAEMON_RC"
check "every run succeeded" "9|9" "$(sql "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM job_runs")"
check "the runs were claimed in the daemon's name" "0" \
    "$(sql "SELECT count(*) FROM job_run_claims WHERE worker IS NULL OR worker = ''")"
load_expected h1 --symbols AAPL,MSFT,NVDA --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-03-31)"
check_bars_exact
check "no error while it ran as bf_daemon" "0" "$(grep -c '"level":"\(error\|crit\)"' "$T/d1.log" || true)"

# What bf_daemon may not do.
# denied SQL: bf_daemon's attempt fails with "permission denied" (read whole, no pipe under pipefail).
denied() {
    local out
    out=$(psql -XAtq -U bf_daemon -v ON_ERROR_STOP=1 -c "$1" 2>&1) && return 1
    grep -q 'permission denied' <<<"$out"
}
check_cmd "bf_daemon cannot change definitions" denied "UPDATE job_definitions SET enabled = false"
check_cmd "bf_daemon cannot write runs directly" denied "UPDATE job_runs SET status = 'queued'"
check_cmd "bf_daemon cannot delete bars" denied "DELETE FROM bars"
check_cmd "bf_daemon cannot add definitions" denied "INSERT INTO job_definitions (symbol, timeframe, job_type) VALUES ('X', 'd1', 'fetch_historical')"
check_cmd "bf_daemon cannot create tables" denied "CREATE TABLE t (x int)"
# A temporary table (pg_temp) standing in for the queue's, with a trigger that
# would run with the functions' owner's rights: the functions' search_path
# names the schema first and pg_temp last, so they never see it.
cat >"$T/escalate.sql" <<'SQL'
CREATE TEMP TABLE job_runs (LIKE public.job_runs INCLUDING DEFAULTS);
CREATE FUNCTION pg_temp.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE 'ALTER ROLE bf_daemon SUPERUSER';
    RETURN NEW;
END $$;
CREATE TRIGGER escalate BEFORE UPDATE ON pg_temp.job_runs FOR EACH ROW EXECUTE FUNCTION pg_temp.escalate();
INSERT INTO pg_temp.job_runs (id, job_def_id, job_type, symbol, timeframe, range_start, range_end)
    VALUES (1, 1, 'fetch_historical', 'X', 'd1', '2024-01-01', '2024-01-02');
SELECT count(*) FROM claim_queued_job('attacker', 10, 30);
SQL
psql -XAtq -U bf_daemon -f "$T/escalate.sql" >"$T/escalate.out" 2>&1 || true
check "a temporary job_runs cannot borrow the owner's rights" "f" \
    "$(sql "SELECT rolsuper FROM pg_roles WHERE rolname = 'bf_daemon'")"
check "the claim saw the real queue, not the temporary table" "0" "$(tail -1 "$T/escalate.out")"
bf migrate --grant-role bf_daemon >"$T/grant.out"
check_cmd "--grant-role grants an existing role" grep -q "granted role bf_daemon" "$T/grant.out"
check_cmd "the grants include the writer's temporary staging table" \
    grep -q '^GRANT TEMPORARY ON DATABASE backfilld TO "bf_daemon";$' "$T/role.sql"
sql "CREATE ROLE nobody_else LOGIN"
claim_out=$(psql -XAtq -U nobody_else -c "SELECT * FROM claim_queued_job('x', 1, 30)" 2>&1 || true)
check_cmd "a role without the grant cannot claim" grep -q 'permission denied for function claim_queued_job' <<<"$claim_out"
check "an existing role is refused, nothing changed" "65" \
    "$(bf migrate --create-role bf_daemon >/dev/null 2>&1; echo $?)"
finish
