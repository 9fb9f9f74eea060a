#!/usr/bin/env bash
# enqueue --all-active (issue #9, "the universe"): the simulator's asset list
# (~11,000 active us_equity symbols, some with a '.') becomes one definition
# per symbol with the other options exactly as --symbols would make them, in a
# few statements (the time is logged); a second run changes nothing; a symbol
# that leaves the list is reported by symbol (stdout and a log line) and its
# definition kept and still enabled; --exchange keeps one exchange's symbols
# without calling the others "gone"; a '.' symbol backfills; bad answers (401,
# 500, not JSON, not an asset list, an empty list, no server) are errors that
# name the cause and write nothing.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start
export APCA_API_BASE_URL=$APCA_API_DATA_URL BACKFILLD_RATE_LIMIT=600000
bf migrate >/dev/null

# The simulator's own list, for the expected symbols.
curl -s --max-time 30 -H "APCA-API-KEY-ID: $APCA_API_KEY_ID" -H "APCA-API-SECRET-KEY: $APCA_API_SECRET_KEY" \
    "$APCA_API_BASE_URL/v2/assets?status=active&asset_class=us_equity" >"$T/active.json"
python3 - "$T/active.json" "$T" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
d = sys.argv[2]
open(d + "/active.txt", "w").write("".join(x["symbol"] + "\n" for x in a))
open(d + "/nyse.txt", "w").write("".join(x["symbol"] + "\n" for x in a if x["exchange"] == "NYSE"))
open(d + "/dots.txt", "w").write("".join(x["symbol"] + "\n" for x in a if "." in x["symbol"]))
PY
n_active=$(wc -l <"$T/active.txt")
n_nyse=$(wc -l <"$T/nyse.txt")
dots=$(paste -sd, "$T/dots.txt")
check_cmd "the simulator lists about 11,000 active symbols ($n_active)" test "$n_active" -ge 10000
check_cmd "some with a '.' ($dots)" test -n "$dots"
sql "CREATE TABLE expected_universe (symbol text PRIMARY KEY)"
psql -XAtq -v ON_ERROR_STOP=1 -c "\\copy expected_universe FROM '$T/active.txt'"
universe_diff() { # definitions of timeframe $1 against the expected list
    sql "SELECT (SELECT count(*) FROM (SELECT symbol FROM expected_universe
                 EXCEPT SELECT symbol FROM job_definitions WHERE timeframe = '$1') a)
              + (SELECT count(*) FROM (SELECT symbol FROM job_definitions WHERE timeframe = '$1'
                 EXCEPT SELECT symbol FROM expected_universe) b)"
}
defs_digest() {
    sql "SELECT count(*) || ':' || md5(string_agg(concat_ws('|', symbol, timeframe, job_type, enabled,
           priority, feed, adjustment, backfill_from, backfill_to), ',' ORDER BY symbol, timeframe))
         FROM job_definitions"
}

# --- the first run -----------------------------------------------------------------------
t0=$(now_ms)
bf enqueue --all-active --timeframe d1 --from 2024-01-02 --to 2024-01-03 --feed iex --priority 3 \
    >"$T/first.out" 2>"$T/first.err" || fail "enqueue --all-active failed: $(cat "$T/first.err")"
t1=$(now_ms)
log "enqueue --all-active: $n_active symbols, $(awk -v ms=$((t1 - t0)) 'BEGIN { printf "%.2f", ms / 1000 }') s"
cat "$T/first.out"
check "one definition per active symbol" "$n_active|0" \
    "$(sql "SELECT count(*) FROM job_definitions")|$(universe_diff d1)"
check "with the options given, as --symbols makes them" "$n_active" \
    "$(sql "SELECT count(*) FROM job_definitions WHERE job_type = 'fetch_historical' AND feed = 'iex'
            AND adjustment = 'raw' AND priority = 3 AND enabled
            AND backfill_from = backfilld_ny_day('2024-01-02') AND backfill_to = backfilld_ny_day('2024-01-04')")"
check "one run (a d1 chunk is a year) each" "$n_active" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'queued'")"
check "the summary says so" "1" "$(grep -c "^queued $n_active runs for $n_active symbols" "$T/first.out")"
check "nothing reported missing on the first run" "0" "$(grep -c "not in Alpaca's active list" "$T/first.out")"
check_cmd "under a minute for $n_active symbols ($((t1 - t0)) ms)" test $((t1 - t0)) -lt $(scaled 60000)

# --- idempotent -----------------------------------------------------------------------------
before=$(defs_digest)
runs_before=$(sql "SELECT count(*) FROM job_runs")
bf enqueue --all-active --timeframe d1 --from 2024-01-02 --to 2024-01-03 --feed iex --priority 3 \
    >"$T/second.out" 2>"$T/second.err" || fail "second run failed: $(cat "$T/second.err")"
check "a second run changes no definition" "$before" "$(defs_digest)"
check "and queues nothing" "$runs_before|1" \
    "$(sql "SELECT count(*) FROM job_runs")|$(grep -c '^queued 0 runs' "$T/second.out")"

# --- a '.' symbol backfills ----------------------------------------------------------------------
daemon_start backfill --until-idle
daemon_wait "$DAEMON_PID" 300
check "the daemon drains the universe" "0|$n_active" \
    "$DAEMON_RC|$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
load_expected d1 --symbols "$dots" --timeframe 1Day --feed iex --start "$(ny 2024-01-02)" --end "$(ny_end 2024-01-03)"
sql "DELETE FROM bars WHERE symbol NOT LIKE '%.%'"
check_cmd "the '.' symbols have bars" test "$(sql "SELECT count(*) FROM bars")" -gt 0
check_bars_exact "'.' symbols"

# --- a symbol leaves the list ------------------------------------------------------------------------
check "the simulator drops S0007A and BRK.B" '{"ok":true}' "$(sim_get '/__sim/set?remove_asset=S0007A,BRK.B')"
bf enqueue --all-active --timeframe d1 --from 2024-01-02 --to 2024-01-03 --feed iex --priority 3 \
    >"$T/removed.out" 2>"$T/removed.err" || fail "run after the removal failed: $(cat "$T/removed.err")"
cat "$T/removed.out"
check "the report names both, and nothing else" "2" "$(grep -c '^  \(S0007A\|BRK\.B\) .*d1/fetch_historical' "$T/removed.out")"
check "the count is right" "1" "$(grep -c "^2 symbols with definitions are not in Alpaca's active list" "$T/removed.out")"
check "each as no longer listed (it was before)" "2" "$(grep -c '^  \(S0007A\|BRK\.B\) .*; no longer listed since 20' "$T/removed.out")"
check "the universe keeps when they left, and everyone else as listed" "2|0" \
    "$(sql "SELECT count(*) FILTER (WHERE gone_since IS NOT NULL AND symbol IN ('S0007A', 'BRK.B')),
                   count(*) FILTER (WHERE gone_since IS NOT NULL AND symbol NOT IN ('S0007A', 'BRK.B'))
              FROM universe_assets")"
sql "INSERT INTO job_definitions (symbol, timeframe, job_type) VALUES ('HANDMADE', 'd1', 'fetch_historical')"
bf enqueue --all-active --timeframe d1 --from 2024-01-02 --to 2024-01-03 --feed iex --priority 3 \
    >"$T/handmade.out" 2>"$T/handmade.err" || fail "run with a hand-made definition failed: $(cat "$T/handmade.err")"
check "a symbol never listed is told apart" "1" "$(grep -c '^  HANDMADE .*; never listed$' "$T/handmade.out")"
sql "DELETE FROM job_definitions WHERE symbol = 'HANDMADE'"
check "each is logged by symbol" "2" "$(grep -c '"msg":"defined symbol not in the active asset list","symbol":"\(S0007A\|BRK\.B\)"' "$T/removed.err")"
check "their definitions are kept, enabled, their runs and bars too" "2|2|2" \
    "$(sql "SELECT count(*) FILTER (WHERE enabled), count(*), (SELECT count(*) FROM job_runs WHERE symbol IN ('S0007A', 'BRK.B'))
            FROM job_definitions WHERE symbol IN ('S0007A', 'BRK.B')")"

# --- --exchange ------------------------------------------------------------------------------------
bf enqueue --all-active --exchange NYSE --timeframe w1 --from 2024-01-01 --to 2024-01-31 \
    >"$T/nyse.out" 2>"$T/nyse.err" || fail "--exchange NYSE failed: $(cat "$T/nyse.err")"
n_nyse_now=$(grep -vcx -e S0007A -e BRK.B "$T/nyse.txt")
check "--exchange NYSE: one w1 definition per NYSE symbol still listed" "$n_nyse_now" \
    "$(sql "SELECT count(*) FROM job_definitions WHERE timeframe = 'w1'")"
check "symbols on other exchanges are not reported missing" "1" "$(grep -c "^2 symbols with definitions are not in Alpaca's active list" "$T/nyse.out")"
check "an unknown exchange is refused before any request" "65" "$(bf enqueue --all-active --exchange NYSE,MOON --timeframe d1 --from 2024-01-02 >/dev/null 2>&1; echo $?)"
check "--exchange without --all-active is a usage error" "64" "$(bf enqueue --symbols AAPL --exchange NYSE --timeframe d1 --from 2024-01-02 >/dev/null 2>&1; echo $?)"

# --- bad answers write nothing -------------------------------------------------------------------------
digest=$(defs_digest)
runs=$(sql "SELECT count(*) FROM job_runs")
bad_run() { # NAME WANT_RC WANT_TEXT [ENV...]: enqueue --all-active must fail with WANT_RC naming WANT_TEXT
    local name=$1 want_rc=$2 want=$3 rc=0
    shift 3
    env "$@" "$BF_BIN" enqueue --all-active --timeframe d1 --from 2025-01-02 --to 2025-01-03 \
        >"$T/$name.out" 2>"$T/$name.err" || rc=$?
    check "$name: exit $want_rc" "$want_rc" "$rc"
    grep -qF -- "$want" "$T/$name.err" || fail "$name: the error does not say '$want': $(cat "$T/$name.err")"
    grep -qF "nothing was enqueued" "$T/$name.err" || fail "$name: the error does not say nothing was enqueued"
    check "$name: nothing written" "$digest|$runs" "$(defs_digest)|$(sql "SELECT count(*) FROM job_runs")"
}
bad_run wrong_key 78 "refused the credentials (HTTP 401)" APCA_API_KEY_ID=wrong-key
grep -q APCA_API_BASE_URL "$T/wrong_key.err" || fail "the 401 message should name APCA_API_BASE_URL"
grep -q wrong-key "$T/wrong_key.err" && fail "the key must not appear in the message"

# A server that answers badly, one way per path.
cat >"$T/bad_server.py" <<'PY'
import http.server, sys
answers = {
    "/nonjson": (200, "text/html", "<html><body>maintenance</body></html>"),
    "/notlist": (200, "application/json", '{"assets": []}'),
    "/partial": (200, "application/json", '[{"symbol": "AAPL", "status": "active", "class": "us_equity"}, 42]'),
    "/empty": (200, "application/json", "[]"),
    "/e500": (500, "application/json", '{"message": "internal server error"}'),
}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status, ctype, body = answers.get("/" + self.path.split("/")[1], (404, "text/plain", "no"))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1] + ".tmp", "w").write(str(s.server_port))
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
s.serve_forever()
PY
python3 "$T/bad_server.py" "$T/bad.port" &
PIDS+=($!)
wait_for "the bad server's port" 15 test -s "$T/bad.port"
BAD="http://127.0.0.1:$(cat "$T/bad.port")"
bad_run nonjson 69 "answered 200 but not with an asset list: not JSON" APCA_API_BASE_URL="$BAD/nonjson"
bad_run notlist 69 "not a JSON array of assets" APCA_API_BASE_URL="$BAD/notlist"
bad_run partial 69 "asset 1: not an object" APCA_API_BASE_URL="$BAD/partial"
bad_run empty 69 "is empty" APCA_API_BASE_URL="$BAD/empty"
bad_run e500 69 "HTTP 500: internal server error" APCA_API_BASE_URL="$BAD/e500"
bad_run unreachable 69 "cannot reach http://127.0.0.1:1" APCA_API_BASE_URL=http://127.0.0.1:1
bad_run bad_url 78 "APCA_API_BASE_URL: must start with http:// or https://" APCA_API_BASE_URL=paper-api.alpaca.markets

check "--help documents --all-active and --exchange" "2" "$(bf enqueue --help | grep -c -e '--all-active takes' -e '--exchange keeps')"
finish
