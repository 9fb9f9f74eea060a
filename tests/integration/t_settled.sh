#!/usr/bin/env bash
# Only settled bars count as covered, and an open end stays open.
#  1. `enqueue … --timeframe d1 --from <recent>` with no --to leaves the
#     definition open-ended and ends its runs at a New York midnight at least
#     the settling delay (and, for SIP without a real-time plan, 15 minutes)
#     old: the day in progress is never stored as a final bar.
#  2. An open-ended m1 definition run for minutes against the simulator's
#     moving "now" keeps fetching its tail as bars settle, in at most two runs
#     a chunk (no run per refresh), and ends with every bar it stored equal to
#     the simulator's final values.
#  3. An intraday definition stores the bar in progress, marked not final,
#     and fetches it again until it is final.
# XX… symbols trade around the clock in the simulator, so this works at any
# hour and weekday; the simulator revises a bar for 5 s after its close and
# the daemon waits 10 s.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start --settle-seconds 5
bf migrate >/dev/null
export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_SETTLE_SECONDS=10
export BACKFILLD_SCHEDULE_INTERVAL_MS=500 BACKFILLD_POLL_INTERVAL_MS=200

# --- 1. no --to: open, and clamped to the settled horizon ---------------------------
bf enqueue --symbols XXD --timeframe d1 --from "$(date -u -d '-20 days' +%Y-%m-%d)" >"$T/enqueue.out"
check "the definition is open-ended" "t" "$(sql "SELECT backfill_to IS NULL FROM job_definitions WHERE symbol = 'XXD'")"
check "the runs end at a New York midnight" "00:00:00" \
    "$(sql "SELECT (max(range_end) AT TIME ZONE 'America/New_York')::time FROM job_runs WHERE symbol = 'XXD'")"
check "at least the settling delay and SIP's 15 minutes ago, and less than a day before that" "t" \
    "$(sql "SELECT max(range_end) <= now() - interval '15 min 10 s'
                   AND max(range_end) > now() - interval '1 day 15 min 10 s' FROM job_runs WHERE symbol = 'XXD'")"
grep -q "later bars are fetched as they settle" "$T/enqueue.out" || fail "enqueue does not say the end is open: $(cat "$T/enqueue.out")"
daemon_start d0 --until-idle
daemon_wait "$DAEMON_PID" 120
check "d0 exits 0" "0" "$DAEMON_RC"
check "no daily bar of a day not over is stored" "0" \
    "$(sql "SELECT count(*) FROM bars WHERE symbol = 'XXD' AND ts >= (SELECT max(range_end) FROM job_runs WHERE symbol = 'XXD')")"
check "the 19 or 20 days before are, every one final" "t|0" \
    "$(sql "SELECT count(*) BETWEEN 19 AND 21, count(*) FILTER (WHERE NOT final) FROM bars WHERE symbol = 'XXD'")"

# --- 2 and 3. a moving now ------------------------------------------------------
FROM=$(date -u -d '-10 min' +%Y-%m-%dT%H:%M:00Z)
bf enqueue --symbols XXA --timeframe m1 --feed iex --from "$FROM" >/dev/null
sql "UPDATE job_definitions SET refresh_interval = '3 seconds' WHERE symbol = 'XXA';
     INSERT INTO job_definitions (symbol, timeframe, job_type, feed, refresh_interval, lookback)
     VALUES ('XXB', 'm1', 'fetch_intraday', 'iex', '3 seconds', '10 minutes')" >/dev/null
T0=$(date +%s)
daemon_start d1
# A bar of XXB stored before it was final (the one in progress, or one inside
# the simulator's revision window).
wait_for "a bar stored not final" 60 sql_ge "SELECT count(*) FROM bars WHERE symbol = 'XXB' AND NOT final" 1
UNSETTLED=$(sql "SELECT min(ts) FROM bars WHERE symbol = 'XXB' AND NOT final")
log "XXB bar $UNSETTLED stored not final"
wait_for "XXA's tail settled two minutes on" 240 sql_eq \
    "SELECT count(*) FROM job_runs WHERE symbol = 'XXA' AND status = 'succeeded' AND range_end >= to_timestamp($T0 + 100)" 1
wait_for "the not-final XXB bar fetched again, final" 60 sql_eq \
    "SELECT final FROM bars WHERE symbol = 'XXB' AND ts = '$UNSETTLED'" t
# Stop extending XXA, let its last extension finish, then stop.
sql "UPDATE job_definitions SET refresh_interval = '1 day' WHERE symbol = 'XXA';
     UPDATE job_definitions SET enabled = false WHERE symbol = 'XXB'" >/dev/null
wait_for "XXA's run done" 60 sql_eq \
    "SELECT count(*) FROM job_runs WHERE symbol = 'XXA' AND status IN ('queued', 'running')" 0
wait_for "XXB's runs done" 60 sql_eq \
    "SELECT count(*) FROM job_runs WHERE symbol = 'XXB' AND status = 'running'" 0
# The scheduler (every 500 ms here) folds the last completion into the kept coverage.
wait_for "XXA's coverage up to date" 30 sql_eq \
    "SELECT upper(c.covered) = (SELECT max(range_end) FROM job_runs WHERE symbol = 'XXA')
       FROM job_coverage c JOIN job_definitions d ON d.id = c.job_def_id WHERE d.symbol = 'XXA'" t
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 60
check "d1 exits 0 on SIGTERM" "0" "$DAEMON_RC"

H=$(sql "SELECT to_char(max(range_end) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM job_runs WHERE symbol = 'XXA'")
log "XXA covered from $FROM to $H by runs: $(sql "SELECT string_agg(range_start || '..' || range_end || ' ' || status || ' #' || attempt || ' pages ' || pages || ' bars ' || bars_written, '; ' ORDER BY range_start) FROM job_runs WHERE symbol = 'XXA'")"
# The head's pages add up those of every tail merged into it (one at least each):
# the horizon moved at least two minutes, so a tail was made and then merged.
check "XXA's tail moved with the clock, each minute a bar settled: at most two runs a chunk (head and tail), not a run per refresh" "t" \
    "$(sql "SELECT max(n) <= 2 AND max(p) >= 2 FROM (SELECT backfill_chunk_end('m1', range_start), count(*) AS n, max(pages) AS p
                                                     FROM job_runs WHERE symbol = 'XXA' GROUP BY 1) x")"
load_expected m1 --symbols XXA --timeframe 1Min --feed iex --start "$FROM" --end "$(date -u -d "$H - 1 second" +%Y-%m-%dT%H:%M:%SZ)"
check "XXA: as many bars as the simulator's final dump" "$(sql "SELECT count(*) FROM expected_bars")" \
    "$(sql "SELECT count(*) FROM bars WHERE symbol = 'XXA'")"
check "XXA: every bar equals the final values, and is marked final" "0|0" \
    "$(sql "SELECT (SELECT count(*) FROM (SELECT ts, open, high, low, close, volume, trade_count, vwap FROM bars WHERE symbol = 'XXA'
                   EXCEPT SELECT ts, open, high, low, close, volume, trade_count, vwap FROM expected_bars) x),
                  (SELECT count(*) FROM bars WHERE symbol = 'XXA' AND NOT final)")"
check "XXA: the tail is within two minutes of the clock" "t" \
    "$(sql "SELECT '$H'::timestamptz > now() - interval '4 min'")"

LAST=$(sql "SELECT to_char(max(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM bars WHERE symbol = 'XXB' AND final")
load_expected m1 --symbols XXB --timeframe 1Min --feed iex --start "$(sql "SELECT to_char(min(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM bars WHERE symbol = 'XXB'")" --end "$LAST"
check "XXB: every final bar equals the simulator's final values" "0" \
    "$(sql "SELECT count(*) FROM (SELECT ts, open, high, low, close, volume, trade_count, vwap FROM bars WHERE symbol = 'XXB' AND final
             EXCEPT SELECT ts, open, high, low, close, volume, trade_count, vwap FROM expected_bars) x")"
check "XXB: and none is missing" "0" \
    "$(sql "SELECT count(*) FROM (SELECT ts FROM expected_bars EXCEPT SELECT ts FROM bars WHERE symbol = 'XXB') x")"
check "XXB: bars not final are only the last fetch's youngest" "0" \
    "$(sql "SELECT count(*) FROM bars WHERE symbol = 'XXB' AND NOT final
             AND ts + interval '70 seconds' < (SELECT max(fetched_at) FROM bars WHERE symbol = 'XXB')")"
check "every bar says when it was fetched" "0" "$(sql "SELECT count(*) FROM bars WHERE fetched_at IS NULL")"

# status: per definition, its series, covered-until and the open end's tail.
bf status --json >"$T/status.json"
check "status: XXA's series, open end and covered-until" "iex|raw|True|$(sql "SELECT to_char('$H'::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI')")" \
    "$(python3 -c '
import json, sys
d = [x for x in json.load(open(sys.argv[1]))["definitions"] if x["symbol"] == "XXA"][0]
print(d["feed"], d["adjustment"], d["open_end"], d["covered_until"][:16].replace(" ", "T"), sep="|")' "$T/status.json")"
check "status: XXA's unsettled tail is the time since covered-until" "t" \
    "$(python3 -c '
import json, sys
d = [x for x in json.load(open(sys.argv[1]))["definitions"] if x["symbol"] == "XXA"][0]
print("t" if 0 <= d["unsettled_tail_s"] < 600 else d["unsettled_tail_s"])' "$T/status.json")"
check "status: XXB's bars not final" "$(sql "SELECT count(*) FROM bars WHERE symbol = 'XXB' AND NOT final")" \
    "$(python3 -c '
import json, sys
print([x for x in json.load(open(sys.argv[1]))["definitions"] if x["symbol"] == "XXB"][0]["bars_not_final"])' "$T/status.json")"
bf status >"$T/status.txt"
grep -q "^  XXA *m1 *iex *raw" "$T/status.txt" || fail "status text lacks XXA's series: $(cat "$T/status.txt")"
finish
