#!/usr/bin/env bash
# /metrics and /healthz, and `status --json`, against the database:
#  - the exposition passes `promtool check metrics` (no errors, no lint
#    warnings); its counters agree with the tables; no per-job or per-symbol
#    label (unbounded cardinality);
#  - /healthz is 200 "ok"; 503 naming the database while Postgres is down, and
#    200 again by itself once it is back;
#  - rejected Alpaca credentials: /healthz 503 naming the credentials, the run
#    goes back to queued without spending an attempt, nothing fails;
#  - `backfilld status --json` parses and agrees with the tables.
. "$(dirname "$0")/lib.sh"

command -v promtool >/dev/null ||
    fail "promtool not found: it comes with Debian's 'prometheus' package (apt-get install prometheus)"

# The control: promtool does report a flawed exposition (no HELP, counter without _total).
ctl=$(printf '# TYPE foo counter\nfoo 1\n' | promtool check metrics 2>&1 || true)
[ -n "$ctl" ] || fail "promtool check metrics reports nothing even for a flawed exposition"

# scrape PATH: prints "CODE BODY" (body newlines removed) of GET PATH on the metrics port.
scrape() {
    curl -s --max-time 5 -o "$T/scrape.body" -w '%{http_code}' "http://127.0.0.1:$PORT$1" >"$T/scrape.code" || true
    printf '%s %s\n' "$(cat "$T/scrape.code")" "$(tr -d '\n' <"$T/scrape.body")"
}
# health_is CODE PATTERN: /healthz answers CODE with a body matching PATTERN (for wait_for).
health_is() {
    local got
    got=$(scrape /healthz)
    [ "${got%% *}" = "$1" ] && grep -qiE -- "$2" <<<"${got#* }"
}
# metric NAME: the value of an unlabelled sample in the last $T/metrics.txt.
metric() {
    awk -v n="$1" '$1 == n { print $2 }' "$T/metrics.txt"
}
# fetch_metrics: /metrics into $T/metrics.txt, checked by promtool and for labels.
fetch_metrics() {
    curl -sf --max-time 5 "http://127.0.0.1:$PORT/metrics" >"$T/metrics.txt" || fail "GET /metrics failed"
    local out rc=0
    out=$(promtool check metrics <"$T/metrics.txt" 2>&1) || rc=$?
    check "promtool check metrics: exit code ($1)" "0" "$rc"
    check "promtool check metrics: no findings ($1)" "" "$out"
    check "no job_id or symbol label ($1)" "0" \
        "$(grep -v '^#' "$T/metrics.txt" | grep -cE '(job_id|symbol)="|AAPL|MSFT|GOOGL' || true)"
}
# num A B: A and B are the same number (Prometheus may print 12 as 12 or 1.2e+01).
num_eq() {
    python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) == float(sys.argv[2]) else 1)' "$1" "$2"
}

pg_start
sim_start
bf migrate >/dev/null
bf enqueue --symbols AAPL,MSFT --timeframe h1 --from 2024-01-01 --to 2024-03-31 >/dev/null
export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_PROGRESS_INTERVAL_MS=500
BACKFILLD_METRICS_LISTEN=127.0.0.1:0 daemon_start d1
D1=$DAEMON_PID
wait_for "metrics listening" 15 grep -q '"msg":"metrics listening"' "$T/d1.log"
PORT=$(metrics_port "$T/d1.log")
log "metrics on port $PORT"
TOTAL=$(sql "SELECT count(*) FROM job_runs")
wait_for "all runs succeeded" 30 sql_eq "SELECT count(*) FROM job_runs WHERE status = 'succeeded'" "$TOTAL"

# --- /metrics agrees with the database -------------------------------------------------
fetch_metrics "after the backfill"
check_cmd "backfilld_runs_succeeded_total = succeeded runs ($TOTAL)" \
    num_eq "$(metric backfilld_runs_succeeded_total)" "$TOTAL"
bars=$(sql "SELECT count(*) FROM bars")
check_cmd "bars were written ($bars)" test "$bars" -gt 0
check_cmd "backfilld_bars_written_total = rows in bars ($bars)" \
    num_eq "$(metric backfilld_bars_written_total)" "$bars"
check_cmd "backfilld_db_up is 1" num_eq "$(metric backfilld_db_up)" 1
check_cmd "backfilld_runs_failed_total is 0" num_eq "$(metric backfilld_runs_failed_total)" 0

# --- /healthz follows the database ---------------------------------------------------------
check "/healthz while all is well" "200 ok" "$(scrape /healthz)"
connected=$(grep -c '"msg":"db connected"' "$T/d1.log")
pg_stop
wait_for "/healthz 503 while the database is down" 10 health_is 503 'database'
check_cmd "/healthz says the database is the problem: $(scrape /healthz)" health_is 503 'database'
fetch_metrics "database down"
check_cmd "backfilld_db_up is 0" num_eq "$(metric backfilld_db_up)" 0
pg_restart_only
wait_for "/healthz 200 once the database is back" 40 health_is 200 '^ok$'
check "/healthz after the database came back" "200 ok" "$(scrape /healthz)"
check_cmd "the daemon reconnected by itself (log: db connected)" \
    count_ge "$T/d1.log" '"msg":"db connected"' $((connected + 1))

# --- rejected credentials ------------------------------------------------------------------
sim_get '/__sim/set?key=other' >/dev/null
bf enqueue --symbols GOOGL --timeframe d1 --from 2024-01-01 --to 2024-01-31 >/dev/null
wait_for "credentials rejected logged" 20 grep -q '"msg":"alpaca credentials rejected' "$T/d1.log"
wait_for "/healthz 503 naming the credentials" 10 health_is 503 'credentials'
check_cmd "/healthz names the credentials: $(scrape /healthz)" health_is 503 'credentials'
wait_for "the run is given back" 10 \
    sql_eq "SELECT status || '|' || attempt FROM job_runs WHERE symbol = 'GOOGL'" "queued|0"
check "the run is queued with attempt 0" "queued|0" \
    "$(sql "SELECT status || '|' || attempt FROM job_runs WHERE symbol = 'GOOGL'")"
check "no run failed" "0" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'failed'")"
check "no error recorded against the run" "0" \
    "$(sql "SELECT jsonb_array_length(errors) FROM job_runs WHERE symbol = 'GOOGL'")"
fetch_metrics "credentials rejected"
check_cmd "backfilld_alpaca_credentials_ok is 0" num_eq "$(metric backfilld_alpaca_credentials_ok)" 0
check_cmd "backfilld_runs_released_total is 1" num_eq "$(metric backfilld_runs_released_total)" 1
check_cmd "backfilld_runs_failed_total is still 0" num_eq "$(metric backfilld_runs_failed_total)" 0

# --- status --json agrees with the tables ----------------------------------------------------
bf status --json >"$T/status.json"
check_cmd "status --json is JSON" python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$T/status.json"
want=$(sql "SELECT s || '=' || n FROM (
              SELECT s, (SELECT count(*) FROM job_runs r WHERE r.status = s) AS n
                FROM unnest(ARRAY['queued','running','succeeded','failed','cancelled']) s) x
            ORDER BY s" | paste -sd,)
got=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["runs"]
print(",".join("%s=%d" % (k, r[k]) for k in sorted(["queued", "running", "succeeded", "failed", "cancelled"])))
' "$T/status.json")
check "status --json runs by status = the table's" "$want" "$got"
check "the GROUP BY agrees too" "$(sql "SELECT string_agg(status || '=' || n, ',' ORDER BY status)
      FROM (SELECT status, count(*) AS n FROM job_runs GROUP BY 1) x")" \
    "$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["runs"]
print(",".join("%s=%d" % (k, r[k]) for k in sorted(["queued", "running", "succeeded", "failed", "cancelled"]) if r[k]))
' "$T/status.json")"
check "status --json bars_total = sum(bars_written) of succeeded runs" \
    "$(sql "SELECT coalesce(sum(bars_written), 0) FROM job_runs WHERE status = 'succeeded'")" \
    "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bars_total"])' "$T/status.json")"
check "bars_total = rows in bars" "$bars" \
    "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bars_total"])' "$T/status.json")"

kill -TERM "$D1"
daemon_wait "$D1" 15
check "daemon exit code" "0" "$DAEMON_RC"
finish
