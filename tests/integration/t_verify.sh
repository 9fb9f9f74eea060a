#!/usr/bin/env bash
# verify, the completeness ledger (issue #14): a backfill of a symbol with a
# hole (HOLE…: no 10:00 ET bar on the 15th until the simulator fills it), one
# that lists mid-range (IPO…: nothing before 2024-06-03) and one with no data
# (ZZ…). verify reads Alpaca's calendar, classifies every series-day exactly
# (complete, not listed yet, no data, and, once the simulator serves the
# missing bars, hole: fewer stored than a re-fetch serves now), says so in its
# exit status, and --refetch queues exactly the holes, after which the stored
# bars equal the simulator's; the daemon's daily pass does the same by itself
# for the last sessions; status shows the ledger's totals through
# verify_status_totals (reported here with `verify --json`'s totals instead
# when status does not call it yet).
. "$(dirname "$0")/lib.sh"

pg_start
sim_start
export APCA_API_BASE_URL=$APCA_API_DATA_URL BACKFILLD_RATE_LIMIT=600000 BACKFILLD_UPKEEP_INTERVAL_MS=0
bf migrate >/dev/null

# The trading days of May-July 2024 as the simulator's calendar has them.
cal() { # FROM TO -> the trading days, one a line
    curl -s --max-time 10 -H "APCA-API-KEY-ID: $APCA_API_KEY_ID" -H "APCA-API-SECRET-KEY: $APCA_API_SECRET_KEY" \
        "$APCA_API_BASE_URL/v2/calendar?start=$1&end=$2" | python3 -c 'import json,sys; [print(d["date"]) for d in json.load(sys.stdin)]'
}
cal 2024-05-01 2024-07-31 >"$T/days.txt"
n_days=$(wc -l <"$T/days.txt")
n_may=$(grep -c '^2024-05' "$T/days.txt")
holes=$(grep -- '-15$' "$T/days.txt" | paste -sd, -)
n_holes=$(grep -c -- '-15$' "$T/days.txt")
check "May-July 2024 has 63 sessions (Memorial Day, Juneteenth, July 4 out), 22 in May" "63|22" "$n_days|$n_may"
check "two of them are the 15th: the HOLE symbol's holes" "2024-05-15,2024-07-15" "$holes"

bf enqueue --symbols HOLEA,IPOB,ZZNONE --timeframe h1 --from 2024-05-01 --to 2024-07-31 >/dev/null
daemon_start backfill --until-idle
daemon_wait "$DAEMON_PID" 120
check "the backfill drains" "0|3" "$DAEMON_RC|$(sql "SELECT count(DISTINCT job_def_id) FROM job_runs WHERE status = 'succeeded'")"
# series_diff SYMBOL TF ADJUSTMENT: rows of expected_bars and of that stored series that the
# other does not have, both ways (0: equal).
series_diff() {
    local cols="ts, open, high, low, close, volume, trade_count, vwap"
    local b="SELECT $cols FROM bars WHERE symbol = '$1' AND timeframe = '$2' AND adjustment = '$3'"
    sql "SELECT (SELECT count(*) FROM (SELECT $cols FROM expected_bars EXCEPT $b) x)
              + (SELECT count(*) FROM ($b EXCEPT SELECT $cols FROM expected_bars) y)"
}
# daycounts SYMBOL FROM TO [dump args]: "DAY COUNT" per New York day of the simulator's dump.
daycounts() {
    local sym=$1 from=$2 to=$3
    shift 3
    "$BF_SIM" dump --symbols "$sym" --timeframe 1Hour --start "$(ny "$from")" --end "$(ny_end "$to")" "$@" |
        TZ=America/New_York python3 -c '
import sys, collections, datetime
c = collections.Counter()
for line in sys.stdin:
    t = line.split(",")[1]
    c[datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone().date().isoformat()] += 1
for d in sorted(c): print(d, c[d])'
}
daycounts HOLEA 2024-05-01 2024-07-31 --with-holes >"$T/holea_holes.txt"
daycounts HOLEA 2024-05-01 2024-07-31 >"$T/holea_filled.txt"
# The days a re-fetch will serve more on, and the lines verify must print for them.
join "$T/holea_holes.txt" "$T/holea_filled.txt" | awk '$3 > $2' >"$T/holea_diff.txt"
check "the simulator's HOLEA misses bars on the two 15ths only" "2024-05-15,2024-07-15" \
    "$(cut -d' ' -f1 "$T/holea_diff.txt" | paste -sd, -)"
awk '{ printf "  %s  hole         %d of 16 bars stored; a re-fetch serves %d\n", $1, $2, $3 }' \
    "$T/holea_diff.txt" >"$T/holea_expected_lines.txt"
load_expected h1 --symbols HOLEA --timeframe 1Hour --start "$(ny 2024-05-01)" --end "$(ny_end 2024-07-31)" --with-holes
check "HOLEA is stored as served, holes included" "$(sql "SELECT count(*) FROM expected_bars")|0" \
    "$(sql "SELECT count(*) FROM bars WHERE symbol = 'HOLEA'")|$(series_diff HOLEA h1 raw)"

# classes LINE_PREFIX: the per-series line of verify's text report.
vline() { grep "^$1 h1 sip raw " "$T/$2.out" | sed 's/ (definition [0-9]*)//'; }

# --- before the simulator fills the holes: a re-fetch serves what is stored -------------------
cal0=$(sim_counter 'c["calendar_requests"]')
rc=0
bf verify --symbols HOLEA,IPOB >"$T/v1.out" 2>"$T/v1.err" || rc=$?
cat "$T/v1.out"
check "nothing is wrong while a re-fetch serves what is stored: exit 0" "0" "$rc"
check "HOLEA: every session complete" "HOLEA h1 sip raw: 63 days: 63 complete" "$(vline HOLEA v1)"
check "IPOB: May is not listed yet, not a hole" "IPOB h1 sip raw: 63 days: 41 complete, 22 not_listed" "$(vline IPOB v1)"
check "IPOB: the days before its first bar as one run" "1" \
    "$(grep -c '^  2024-05-01\.\.2024-05-31  not_listed   22 days$' "$T/v1.out")"
check "the calendar was read into trading_calendar (one request)" "63|1" \
    "$(sql "SELECT count(*) FROM trading_calendar WHERE day BETWEEN '2024-05-01' AND '2024-07-31'")|$(($(sim_counter 'c["calendar_requests"]') - cal0))"
check "an early close allows fewer bars: July 3 (SIP 04:00-17:00) allows 13" "13" \
    "$(sql "SELECT allowed FROM ledger_days(ARRAY['HOLEA']) WHERE day = '2024-07-03'")"

check "bars a session allows, per timeframe (a summer day; IEX 08:00-17:00; an early close)" \
    "960|192|64|32|16|4|1|9|13" \
    "$(sql "SELECT string_agg(a::text, '|' ORDER BY k) FROM (VALUES
              (1, ledger_allowed('m1', 'sip', '2024-07-01', '04:00', '20:00')),
              (2, ledger_allowed('m5', 'sip', '2024-07-01', '04:00', '20:00')),
              (3, ledger_allowed('m15', 'sip', '2024-07-01', '04:00', '20:00')),
              (4, ledger_allowed('m30', 'sip', '2024-07-01', '04:00', '20:00')),
              (5, ledger_allowed('h1', 'sip', '2024-07-01', '04:00', '20:00')),
              (6, ledger_allowed('h4', 'sip', '2024-07-01', '04:00', '20:00')),
              (7, ledger_allowed('d1', 'sip', '2024-07-01', '04:00', '20:00')),
              (8, ledger_allowed('h1', 'iex', '2024-07-01', '04:00', '20:00')),
              (9, ledger_allowed('h1', 'sip', '2024-07-03', '04:00', '17:00'))) v(k, a)")"

rc=0
bf verify >"$T/v2.out" 2>"$T/v2.err" || rc=$?
cat "$T/v2.out"
check "a series with no bar at all is wrong: exit 1" "1" "$rc"
check "ZZNONE: every session fetched and empty" \
    "ZZNONE h1 sip raw: 63 days: 63 no_data; no bar at all: suspicious (a typo'd symbol, the wrong feed, or not listed in the range?)" \
    "$(vline ZZNONE v2)"
check "stderr says why" "1" "$(grep -c '^backfilld verify: not complete: 0 holes, 0 days not fetched, 1 series with no bar' "$T/v2.err")"

# --- the simulator now serves the missing bars: they are holes ------------------------------------
check "the simulator fills the holes" '{"ok":true}' "$(sim_get '/__sim/set?fill_holes=1')"
rc=0
bf verify --symbols HOLEA,IPOB >"$T/v3.out" 2>"$T/v3.err" || rc=$?
cat "$T/v3.out"
check "fewer bars than a re-fetch serves now: exit 1" "1" "$rc"
check "HOLEA: the two 15ths are holes" "HOLEA h1 sip raw: 63 days: 61 complete, 2 hole" "$(vline HOLEA v3)"
check "each named with its counts" "$(cat "$T/holea_expected_lines.txt")" "$(grep '  hole  ' "$T/v3.out")"
check "IPOB is unchanged" "IPOB h1 sip raw: 63 days: 41 complete, 22 not_listed" "$(vline IPOB v3)"
bf verify --symbols HOLEA --json >"$T/v3.json" || true
col_list() { echo "[$(cut -d' ' -f"$1" "$T/holea_diff.txt" | paste -sd, - | sed 's/,/, /g')]"; }
check "--json: the same, per series and day" "False|2|61|['2024-05-15', '2024-07-15']|$(col_list 3)|$(col_list 2)" \
    "$(python3 -c '
import json, sys
v = json.load(open(sys.argv[1]))
s = v["series"][0]
p = [x for x in s["problems"] if x["class"] == "hole"]
print(v["ok"], v["totals"]["hole"], s["classes"]["complete"], [x["day"] for x in p], [x["served"] for x in p], [x["stored"] for x in p], sep="|")' "$T/v3.json")"
check "--no-check answers from the recorded re-check, asking nothing" \
    "HOLEA h1 sip raw: 63 days: 61 complete, 2 hole|0" \
    "$(n0=$(sim_counter 'c["requests"]'); bf verify --symbols HOLEA --no-check >"$T/v4.out" 2>/dev/null; echo "$(vline HOLEA v4)|$(($(sim_counter 'c["requests"]') - n0))")"

# --- --refetch repairs them ---------------------------------------------------------------
queued_before=$(sql "SELECT count(*) FROM job_runs WHERE status = 'queued'")
rc=0
bf verify --symbols HOLEA,IPOB --refetch >"$T/v5.out" 2>"$T/v5.err" || rc=$?
tail -1 "$T/v5.out"
check "--refetch queues the two holes' days, and only them" "0|2|2024-05-15 04:00:00+00 2024-05-16 04:00:00+00,2024-07-15 04:00:00+00 2024-07-16 04:00:00+00" \
    "$queued_before|$(sql "SELECT count(*) FROM job_runs WHERE status = 'queued'")|$(sql "SELECT string_agg(range_start || ' ' || range_end, ',' ORDER BY range_start) FROM job_runs WHERE status = 'queued' AND symbol = 'HOLEA'")"
check "and says so" "1" "$(grep -c '; 2 runs queued$' "$T/v5.out")"
daemon_start repair --until-idle
daemon_wait "$DAEMON_PID" 120
check "the repair runs succeed" "0|0" "$DAEMON_RC|$(sql "SELECT count(*) FROM job_runs WHERE status <> 'succeeded'")"
rc=0
bf verify --symbols HOLEA,IPOB >"$T/v6.out" 2>"$T/v6.err" || rc=$?
check "after the repair nothing is wrong: exit 0" "0" "$rc"
check "HOLEA: every session complete" "HOLEA h1 sip raw: 63 days: 63 complete" "$(vline HOLEA v6)"
load_expected h1 --symbols HOLEA --timeframe 1Hour --start "$(ny 2024-05-01)" --end "$(ny_end 2024-07-31)"
check "HOLEA after the repair equals the simulator's bars" "$(sql "SELECT count(*) FROM expected_bars")|0" \
    "$(sql "SELECT count(*) FROM bars WHERE symbol = 'HOLEA'")|$(series_diff HOLEA h1 raw)"

max_run=$(sql "SELECT max(id) FROM job_runs")
bf verify --symbols ZZNONE --refetch >"$T/v6z.out" 2>&1 || true
check "--refetch asks again for the whole range of a series with no bar: its three h1 chunks" \
    "$(sql "SELECT '$(ny 2024-05-01)'::timestamptz || ' ' || '$(ny 2024-06-01)'::timestamptz || ','
                   || '$(ny 2024-06-01)'::timestamptz || ' ' || '$(ny 2024-07-01)'::timestamptz || ','
                   || '$(ny 2024-07-01)'::timestamptz || ' ' || '$(ny 2024-08-01)'::timestamptz")" \
    "$(sql "SELECT string_agg(range_start || ' ' || range_end, ',' ORDER BY range_start)
              FROM job_runs WHERE id > $max_run AND symbol = 'ZZNONE'")"

# --- the daemon's daily pass does it by itself for the last sessions ------------------------------
# The latest 15th that was a session, and how many sessions it is from the last one that ended.
cal "$(date -u -d '-75 days' +%Y-%m-%d)" "$(date -u +%Y-%m-%d)" >"$T/recent.txt"
today_ny=$(TZ=America/New_York date +%Y-%m-%d)
grep -v "^$today_ny\$" "$T/recent.txt" >"$T/ended.txt" || true
day15=$(grep -- '-15$' "$T/ended.txt" | tail -1)
sessions=$(awk -v d="$day15" '$0 >= d' "$T/ended.txt" | wc -l)
log "the last 15th that was a session: $day15, $sessions sessions back"
sim_get '/__sim/set?fill_holes=0' >/dev/null
bf enqueue --symbols HOLEC --timeframe h1 --from "$day15" --to "$day15" >/dev/null
daemon_start recent --until-idle
daemon_wait "$DAEMON_PID" 120
n_with=$(daycounts HOLEC "$day15" "$day15" --with-holes | cut -d' ' -f2)
n_filled=$(daycounts HOLEC "$day15" "$day15" | cut -d' ' -f2)
check "HOLEC's recent 15th is stored with its hole ($n_with of $n_filled)" "$n_with" \
    "$(sql "SELECT count(*) FROM bars WHERE symbol = 'HOLEC'")"
check_cmd "and the hole is a bar" test "$n_filled" -gt "$n_with"
sim_get '/__sim/set?fill_holes=1' >/dev/null
BACKFILLD_UPKEEP_INTERVAL_MS=1000 BACKFILLD_VERIFY_SESSIONS=$sessions daemon_start pass
wait_for "the daily pass queues the hole and the run succeeds" 60 \
    sql_eq "SELECT count(*) FROM bars WHERE symbol = 'HOLEC'" "$n_filled"
check "the pass is logged with what it found and queued" "1" \
    "$(grep '"msg":"ledger pass"' "$T/pass.log" | grep -c '"holes":1,.*"queued":1')"
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 30
check "the daemon stops cleanly with the upkeep job" "0" "$DAEMON_RC"
bf verify --symbols HOLEC >"$T/v7.out" 2>&1 || true
check "HOLEC: complete" "HOLEC h1 sip raw: 1 days: 1 complete" "$(vline HOLEC v7)"
# status shows the ledger's totals: those of the last verify.
bf status >"$T/status.txt"
check "status prints the ledger's last verify" "1" \
    "$(grep -c '^  last verify .*1 complete, 0 holes' "$T/status.txt" || true)"
check "status --json carries it under ledger" "1|0" \
    "$(bf status --json | python3 -c 'import json,sys; d = json.load(sys.stdin)["ledger"]["last_verify"]["days"]; print(d["complete"], d["hole"], sep="|")')"

# --- usage ----------------------------------------------------------------------------------
check "a bad timeframe is 65" "65" "$(bf verify --timeframe w1 >/dev/null 2>&1; echo $?)"
check "a bad date is 65" "65" "$(bf verify --from 2024-13-01 >/dev/null 2>&1; echo $?)"
check "an unknown option is 64" "64" "$(bf verify --bogus >/dev/null 2>&1; echo $?)"
check "--help names the classes" "6" "$(bf verify --help | grep -c '^  \(complete\|no_data\|not_fetched\|hole\|not_listed\|short\) ')"
finish
