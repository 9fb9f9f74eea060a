#!/usr/bin/env bash
# The Grafana dashboard and the Prometheus alerting rules in config/ stay true
# to the daemon:
#  - promtool check rules passes, and promtool test rules passes the rules'
#    unit tests (config/prometheus/backfilld-rules.test.yml), which do fail
#    when an expectation is wrong;
#  - the issue's alerts exist: no progress while work is queued, failed runs,
#    credentials rejected, database down, rescues (a dead host);
#  - the dashboard is JSON with unique panel ids, a query in every panel, the
#    datasource variable, no overlapping panels, and a panel for each thing the
#    issue asks for; every panel query is valid PromQL (promtool, as a
#    recording rule);
#  - every metric, and every label value a selector names, used by a panel or
#    a rule exists in the /metrics of a real daemon after a small backfill.
set -euo pipefail # also if lib.sh cannot be read: nothing may run with $T unset
. "$(dirname "$0")/lib.sh"

RULES=$SRC_DIR/config/prometheus/backfilld-rules.yml
RULES_TEST=$SRC_DIR/config/prometheus/backfilld-rules.test.yml
DASH=$SRC_DIR/config/grafana/backfilld.json
CHECK=$SRC_DIR/tests/integration/promql_check.py

command -v promtool >/dev/null ||
    fail "promtool not found: it comes with Debian's 'prometheus' package (apt-get install prometheus)"
# A Python with PyYAML, for the rules file (Debian: python3-yaml).
PY=""
for p in python3 /usr/bin/python3; do
    if "$p" -c 'import yaml' 2>/dev/null; then PY=$p && break; fi
done
[ -n "$PY" ] || fail "no python3 with the yaml module (apt-get install python3-yaml)"

# --- the rules -------------------------------------------------------------------------------
rc=0
promtool check rules "$RULES" >"$T/check.out" 2>&1 || rc=$?
check "promtool check rules exits 0" "0" "$rc"
check_cmd "promtool check rules found the 6 rules" grep -q 'SUCCESS: 6 rules found' "$T/check.out"
rc=0
(cd "$(dirname "$RULES_TEST")" && promtool test rules "$(basename "$RULES_TEST")") >"$T/test.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || cat "$T/test.out"
check "promtool test rules passes backfilld-rules.test.yml" "0" "$rc"
# The control: the same tests with one expectation changed must fail.
mkdir -p "$T/ctl"
cp "$RULES" "$T/ctl/"
sed 's/50 runs queued and none completed/49 runs queued and none completed/' "$RULES_TEST" >"$T/ctl/t.yml"
differs() { ! cmp -s "$1" "$2"; }
check_cmd "the control edit changed the test file" differs "$RULES_TEST" "$T/ctl/t.yml"
rc=0
(cd "$T/ctl" && promtool test rules t.yml) >/dev/null 2>&1 || rc=$?
check_cmd "promtool test rules fails a wrong expectation (exit $rc)" test "$rc" -ne 0

for alert in BackfilldNoProgress BackfilldRunsFailed BackfilldCredentialsRejected \
    BackfilldDatabaseDown BackfilldLeasesRescued BackfilldDown; do
    check_cmd "alert $alert is defined" grep -q "^ *- alert: $alert\$" "$RULES"
    check_cmd "alert $alert has a unit test" grep -q "alertname: $alert\$" "$RULES_TEST"
done

# --- the dashboard ---------------------------------------------------------------------------
check_cmd "the dashboard parses as JSON" "$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$DASH"
out=$("$PY" "$CHECK" dashboard "$DASH") || true
check "dashboard structure: no problems" "" "$out"
titles=$("$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
print("\n".join(p["title"] for p in d["panels"] if p["type"] != "row"))' "$DASH")
for want in "Runs by status" "Bars written per second" "requests per second" "429s" \
    "Page retries" "Queue depth" "Oldest queued run" "Lease rescues" "healthz"; do
    check_cmd "a panel for: $want" grep -qF -- "$want" <<<"$titles"
done

"$PY" "$CHECK" exprs "$DASH" "$RULES" >"$T/exprs.tsv"
n_panel=$(grep -c '^panel ' "$T/exprs.tsv")
n_rule=$(grep -c '^rule ' "$T/exprs.tsv")
check "every rule's query was extracted" "6" "$n_rule"
check_cmd "panel queries extracted ($n_panel)" test "$n_panel" -ge 10

# Every panel query as a recording rule: promtool parses each one as PromQL.
{
    echo "groups:"
    echo "  - name: dashboard"
    echo "    rules:"
    i=0
    while IFS=$'\t' read -r _ expr; do
        i=$((i + 1))
        printf '      - record: dashboard:q%d\n        expr: %s\n' "$i" \
            "$("$PY" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$expr")"
    done < <(grep '^panel ' "$T/exprs.tsv")
} >"$T/panels.yml"
rc=0
promtool check rules "$T/panels.yml" >"$T/panels.out" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || cat "$T/panels.out"
check "promtool parses every panel query ($n_panel)" "0" "$rc"

# --- against a real daemon's /metrics ------------------------------------------------------
pg_start
sim_start
bf migrate >/dev/null
bf enqueue --symbols AAPL,MSFT --timeframe d1 --from 2024-01-01 --to 2024-03-31 >/dev/null
export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_PROGRESS_INTERVAL_MS=200
BACKFILLD_METRICS_LISTEN=127.0.0.1:0 daemon_start d1
D1=$DAEMON_PID
wait_for "metrics listening" 15 grep -q '"msg":"metrics listening"' "$T/d1.log"
PORT=$(metrics_port "$T/d1.log")
TOTAL=$(sql "SELECT count(*) FROM job_runs")
wait_for "all runs succeeded" 30 sql_eq "SELECT count(*) FROM job_runs WHERE status = 'succeeded'" "$TOTAL"
curl -sf --max-time 5 "http://127.0.0.1:$PORT/metrics" >"$T/metrics.txt" || fail "GET /metrics failed"
check_cmd "/metrics has the queue gauges" grep -q '^backfilld_queue_runs{status="queued_ready"}' "$T/metrics.txt"

# The control: the checker does report an unknown metric and an unknown label value.
printf 'ctl\tsum(rate(backfilld_no_such_metric_total[5m]))\nctl\tmax(backfilld_queue_runs{status="queued"})\n' \
    >"$T/ctl.tsv"
ctl=$("$PY" "$CHECK" names "$T/metrics.txt" "$T/ctl.tsv" 2>/dev/null || true)
check "the checker reports the control's two problems" "2" "$(grep -c . <<<"$ctl")"

rc=0
"$PY" "$CHECK" names "$T/metrics.txt" "$T/exprs.tsv" >"$T/names.out" 2>"$T/names.err" || rc=$?
log "$(cat "$T/names.err")"
[ "$rc" -eq 0 ] || cat "$T/names.out" >&2
check "every metric and label value of the dashboard and the rules is in /metrics" "0" "$rc"

kill -TERM "$D1"
daemon_wait "$D1" 15
check "daemon exit code" "0" "$DAEMON_RC"
finish
