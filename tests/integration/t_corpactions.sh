#!/usr/bin/env bash
# Corporate actions (issue #14): the daemon syncs GET /v1/corporate-actions
# over a trailing window. A split processed after an adjusted backfill is
# acted on within one sync: exactly the adjusted series' chunks before the
# ex-date are queued again, after which the stored adjusted bars equal the
# simulator's post-split dump while the raw series of the same symbol, and
# the adjusted bars from the ex-date on, keep every row version (same ctid
# and xmin). A late record (a process date days back) is still picked up.
# The name change FB -> META is recorded and reported for the FB
# definition. Each is a log line naming the cause; the counts are on
# /metrics and in `verify --summary` (what status shows).
. "$(dirname "$0")/lib.sh"

pg_start
sim_start
export APCA_API_BASE_URL=$APCA_API_DATA_URL BACKFILLD_RATE_LIMIT=600000 BACKFILLD_UPKEEP_INTERVAL_MS=0
bf migrate >/dev/null

# series_diff SYMBOL TF ADJUSTMENT: rows of expected_bars and of that stored series that the
# other does not have, both ways (0: equal).
series_diff() {
    local cols="ts, open, high, low, close, volume, trade_count, vwap"
    local b="SELECT $cols FROM bars WHERE symbol = '$1' AND timeframe = '$2' AND adjustment = '$3'"
    sql "SELECT (SELECT count(*) FROM (SELECT $cols FROM expected_bars EXCEPT $b) x)
              + (SELECT count(*) FROM ($b EXCEPT SELECT $cols FROM expected_bars) y)"
}
# versions WHERE: a digest of the row versions (ctid, xmin) and values of the bars matching WHERE.
versions() {
    sql "SELECT count(*) || ':' || md5(string_agg(concat_ws('|', ctid, xmin, symbol, timeframe, adjustment,
                ts, open, high, low, close, volume, trade_count, vwap), ',' ORDER BY symbol, timeframe, ts))
           FROM bars WHERE $1"
}
FROM=2024-05-01 TO=2024-06-28
bf enqueue --symbols SPLT,OTHR --timeframe h1 --adjustment split --from $FROM --to $TO >/dev/null
bf enqueue --symbols SPLT --timeframe m30 --from $FROM --to $TO >/dev/null
bf enqueue --symbols FB --timeframe d1 --from 2022-01-03 --to 2022-06-30 >/dev/null
daemon_start backfill --until-idle
daemon_wait "$DAEMON_PID" 120
check "the backfill drains" "0|0" "$DAEMON_RC|$(sql "SELECT count(*) FROM job_runs WHERE status <> 'succeeded'")"
load_expected h1 --symbols SPLT --timeframe 1Hour --adjustment split --start "$(ny $FROM)" --end "$(ny_end $TO)"
check "SPLT h1 split-adjusted, before any split: as the simulator serves it" "0" "$(series_diff SPLT h1 split)"
raw_before=$(versions "symbol = 'SPLT' AND timeframe = 'm30'")
after_ex_before=$(versions "symbol = 'SPLT' AND timeframe = 'h1' AND ts >= '$(ny 2024-06-10)'")
othr_before=$(versions "symbol = 'OTHR'")
fb_before=$(versions "symbol = 'FB'")
runs_before=$(sql "SELECT count(*) FROM job_runs")
max_run_before=$(sql "SELECT max(id) FROM job_runs")

export BACKFILLD_METRICS_LISTEN=127.0.0.1:0
BACKFILLD_UPKEEP_INTERVAL_MS=1000 BACKFILLD_CORPACTIONS_WINDOW_DAYS=2000 BACKFILLD_VERIFY_SESSIONS=0 \
    daemon_start daemon
wait_for "the first sync" 30 count_ge "$T/daemon.log" '"msg":"corporate actions synced"' 1
grep '"msg":"corporate actions synced"' "$T/daemon.log" | head -1
check "the window's static records are stored: FB -> META and AAPL's and MSFT's 2024 dividends" "1|8" \
    "$(sql "SELECT count(*) FROM corporate_actions WHERE ca_type = 'name_change' AND symbol = 'FB' AND new_symbol = 'META'")|$(sql "SELECT count(*) FROM corporate_actions WHERE ca_type = 'cash_dividend' AND symbol IN ('AAPL', 'MSFT')")"
fb_def=$(sql "SELECT id FROM job_definitions WHERE symbol = 'FB'")
check "the name change is logged against the FB definition, naming the cause" "1" \
    "$(grep '"msg":"name change affects a definition"' "$T/daemon.log" |
        grep -c "\"cause\":\"name_change\".*\"old_symbol\":\"FB\",\"new_symbol\":\"META\",\"process_date\":\"2022-06-09\",\"job_def_id\":$fb_def,")"
check "and recorded" "FB|META|$fb_def" \
    "$(sql "SELECT old_symbol || '|' || new_symbol || '|' || job_def_id FROM corporate_action_name_changes")"
check "nothing re-queued: no action touches a stored adjusted series yet" "$runs_before" \
    "$(sql "SELECT count(*) FROM job_runs")"

# --- a split processed after the adjusted backfill -----------------------------------------------
n_synced=$(grep -c '"msg":"corporate actions synced"' "$T/daemon.log")
check "the simulator processes a 4:1 split of SPLT, ex-date 2024-06-10" '{"ok":true}' \
    "$(sim_get '/__sim/set?split=SPLT:2024-06-10:4:1')"
wait_for "the sync that sees it" 30 count_ge "$T/daemon.log" '"msg":"corporate action re-queues adjusted history","cause":"forward_split"' 1
wait_for "its sync line" 30 count_ge "$T/daemon.log" '"msg":"corporate actions synced"' $((n_synced + 1))
h1_def=$(sql "SELECT id FROM job_definitions WHERE symbol = 'SPLT' AND timeframe = 'h1'")
check "one line per re-queued definition: SPLT h1 split, the May chunk and June up to the ex-date" "1" \
    "$(grep -c "\"msg\":\"corporate action re-queues adjusted history\",\"cause\":\"forward_split\",.*\"symbol\":\"SPLT\",\"ex_date\":\"2024-06-10\",.*\"job_def_id\":$h1_def,\"timeframe\":\"h1\",\"adjustment\":\"split\",\"runs\":2" "$T/daemon.log")"
check "within one sync: the first sync that saw the record re-queued both runs" "1" \
    "$(grep '"msg":"corporate actions synced"' "$T/daemon.log" | tail -n +$((n_synced + 1)) |
        grep '"added":[1-9]' | head -1 | grep -c '"added":1,"requeued_definitions":1,"requeued_runs":2,')"
ts_of() { sql "SELECT '$(ny "$1")'::timestamptz"; }
check "exactly those ranges are queued, and nothing of the raw series or of OTHR" \
    "$(ts_of 2024-05-01) $(ts_of 2024-06-01),$(ts_of 2024-06-01) $(ts_of 2024-06-10)|$h1_def" \
    "$(sql "SELECT string_agg(range_start || ' ' || range_end, ',' ORDER BY range_start) || '|'
                   || string_agg(DISTINCT job_def_id::text, ',')
              FROM job_runs WHERE id > $max_run_before")"
wait_for "the re-queued runs succeed" 60 \
    sql_eq "SELECT count(*) FROM job_runs WHERE status <> 'succeeded'" 0
load_expected h1 --symbols SPLT --timeframe 1Hour --adjustment split --split SPLT:2024-06-10:4:1 \
    --start "$(ny $FROM)" --end "$(ny_end $TO)"
check "the stored adjusted bars equal the simulator's post-split dump exactly" "0" "$(series_diff SPLT h1 split)"
check_cmd "and that dump differs from the pre-split bars before the ex-date" test \
    "$(sql "SELECT count(*) FROM expected_bars WHERE ts < '$(ny 2024-06-10)'")" -gt 0
check "the raw series of SPLT is byte-for-byte unchanged, no new row versions" "$raw_before" \
    "$(versions "symbol = 'SPLT' AND timeframe = 'm30'")"
check "the adjusted bars from the ex-date on keep their row versions too" "$after_ex_before" \
    "$(versions "symbol = 'SPLT' AND timeframe = 'h1' AND ts >= '$(ny 2024-06-10)'")"
check "OTHR and FB are untouched" "$othr_before|$fb_before" \
    "$(versions "symbol = 'OTHR'")|$(versions "symbol = 'FB'")"

# --- a late record -------------------------------------------------------------------------------------
late=$(TZ=America/New_York date -d '-5 days' +%Y-%m-%d)
check "a split of OTHR appears late: processed $late" '{"ok":true}' \
    "$(sim_get "/__sim/set?split=OTHR:2024-06-03:2:1&split_process_date=$late")"
wait_for "the trailing window picks it up" 30 count_ge "$T/daemon.log" \
    '"msg":"corporate action re-queues adjusted history","cause":"forward_split",.*"symbol":"OTHR"' 1
check "its record says when it was processed" "$late" \
    "$(sql "SELECT process_date FROM corporate_actions WHERE symbol = 'OTHR'")"
wait_for "OTHR's re-queued runs succeed" 60 \
    sql_eq "SELECT count(*) FROM job_runs WHERE status <> 'succeeded'" 0
load_expected h1 --symbols OTHR --timeframe 1Hour --adjustment split --split OTHR:2024-06-03:2:1 \
    --start "$(ny $FROM)" --end "$(ny_end $TO)"
check "OTHR's adjusted bars equal the simulator's after its split" "0" "$(series_diff OTHR h1 split)"
check "SPLT's raw series still unchanged" "$raw_before" "$(versions "symbol = 'SPLT' AND timeframe = 'm30'")"

# --- metrics, summary, budget -------------------------------------------------------------------------
port=$(metrics_port "$T/daemon.log")
curl -s --max-time 10 "http://127.0.0.1:$port/metrics" >"$T/metrics.txt"
check "/metrics counts the runs re-queued by actions (2 + 2) and the name change" "4|1" \
    "$(awk '$1 == "backfilld_corporate_actions_requeued_runs_total" { print $2 }' "$T/metrics.txt")|$(awk '$1 == "backfilld_corporate_actions_name_changes_total" { print $2 }' "$T/metrics.txt")"
check_cmd "and when the last sync succeeded" \
    awk '$1 == "backfilld_corporate_actions_last_success_seconds" && $2 > 0 { ok = 1 } END { exit !ok }' "$T/metrics.txt"
bf verify --summary >"$T/summary.txt"
cat "$T/summary.txt"
check "verify --summary (what status shows): 4 runs re-queued, 1 name change" "1" \
    "$(grep -c '^  corporate actions  synced .* records, 4 runs re-queued, 1 name changes affecting definitions$' "$T/summary.txt")"
bf verify --symbols FB >"$T/fb.out" 2>&1 || true
check "verify reports the name change for the FB definition" "1" \
    "$(grep -c "^name change FB -> META on 2022-06-09 affects definition $fb_def (FB d1)$" "$T/fb.out")"
bf verify --symbols FB --json >"$T/fb.json" 2>/dev/null || true
check "and in --json" "FB|META|2022-06-09|$fb_def|d1" \
    "$(python3 -c 'import json, sys; n = json.load(open(sys.argv[1]))["name_changes"][0]; print(n["old_symbol"], n["new_symbol"], n["process_date"], n["job_def_id"], n["timeframe"], sep="|")' "$T/fb.json")"
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 30
check "the daemon stops cleanly" "0" "$DAEMON_RC"

# A daemon with nothing to fetch: every token the shared bucket grants it is the sync's, one per
# request (measured with no daemon running at either end).
seq0=$(sql "SELECT grant_seq FROM rate_limits WHERE name = 'alpaca'")
ca0=$(sim_counter 'c["corporate_actions_requests"]')
cal0=$(sim_counter 'c["calendar_requests"]')
BACKFILLD_UPKEEP_INTERVAL_MS=1000 BACKFILLD_CORPACTIONS_WINDOW_DAYS=2000 BACKFILLD_VERIFY_SESSIONS=0 \
    daemon_start idle
wait_for "two syncs" 30 count_ge "$T/idle.log" '"msg":"corporate actions synced"' 2
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 30
n_req=$(($(sim_counter 'c["corporate_actions_requests"]') - ca0 + $(sim_counter 'c["calendar_requests"]') - cal0))
check_cmd "the idle daemon synced at least twice ($n_req requests)" test "$n_req" -ge 2
check "each sync request took one token of the shared budget (rate_limits 'alpaca'), and only those" \
    "$n_req" "$(($(sql "SELECT grant_seq FROM rate_limits WHERE name = 'alpaca'") - seq0))"
finish
