#!/usr/bin/env bash
# The simulator's trading calendar (GET /v2/calendar, alpaca-more-api.md §3):
# the NYSE holidays and their weekend rules, early closes with their fields,
# T+2/T+1 settlement, defaults and errors, and its consistency with the bars:
# for every day of 2024 the calendar lists exactly the days with SIP day
# bars, and the SIP minute bars of each listed day lie inside its session.
. "$(dirname "$0")/lib.sh"

# A bars budget of one request: the calendar must not spend it.
sim_start --rate 0.001 --burst 1
AUTH=(-H "APCA-API-KEY-ID: $APCA_API_KEY_ID" -H "APCA-API-SECRET-KEY: $APCA_API_SECRET_KEY")
# cal QUERY: status code, then the body in $T/cal.json
cal() { curl -s --max-time 20 -o "$T/cal.json" -w '%{http_code}' "${AUTH[@]}" "http://127.0.0.1:$SIM_PORT/v2/calendar?$1"; }
# summary PYTHON_EXPR over a = the array just fetched
summary() { python3 -c "import json; a = json.load(open('$T/cal.json')); print($1)"; }
# dates QUERY: the dates listed, space-separated
dates() { cal "$1" >/dev/null && summary '" ".join(x["date"] for x in a)'; }

check "2024 answers 200" 200 "$(cal 'start=2024-01-01&end=2024-12-31')"
cp "$T/cal.json" "$T/cal2024.json"
check "2024 has 252 trading days" 252 "$(summary 'len(a)')"
check "every element has exactly the documented fields, in order" \
    "date open close session_open session_close settlement_date" "$(summary '" ".join(sorted(set(" ".join(x) for x in a)))')"
check "the 2024 weekday holidays are absent" \
    "2024-01-01 2024-01-15 2024-02-19 2024-03-29 2024-05-27 2024-06-19 2024-07-04 2024-09-02 2024-11-28 2024-12-25" \
    "$(python3 -c "
import datetime, json
have = {x['date'] for x in json.load(open('$T/cal.json'))}
days = (datetime.date(2024, 1, 1) + datetime.timedelta(i) for i in range(366))
print(' '.join(d.isoformat() for d in days if d.weekday() < 5 and d.isoformat() not in have))")"
check "early closes 2024: 13:00 close, session to 1700" \
    '2024-07-03 09:30 13:00 0400 1700|2024-11-29 09:30 13:00 0400 1700|2024-12-24 09:30 13:00 0400 1700' \
    "$(summary '"|".join(" ".join([x["date"], x["open"], x["close"], x["session_open"], x["session_close"]]) for x in a if x["close"] != "16:00")')"
check "every other day: 09:30-16:00, session 0400-2000" "249 09:30 16:00 0400 2000" \
    "$(summary '" ".join([str(sum(1 for x in a if x["close"] == "16:00"))] + sorted(set(x["open"] + " " + x["close"] + " " + x["session_open"] + " " + x["session_close"] for x in a if x["close"] == "16:00")))')"
# §3's example, but settled T+1 (2024-12-02): the rule from 2024-05-28 on.
check "the early close of §3's example, exactly" \
    '[{"date":"2024-11-29","open":"09:30","close":"13:00","session_open":"0400","session_close":"1700","settlement_date":"2024-12-02"}]' \
    "$(cal 'start=2024-11-29&end=2024-11-29' >/dev/null; cat "$T/cal.json")"
check "no weekend is listed" "0" "$(summary 'sum(1 for x in a if __import__("datetime").date.fromisoformat(x["date"]).weekday() > 4)')"

# Weekend rules and first years, in other years.
check "2021: Christmas (Sat) on Fri 12-24; New Year's 2022 (Sat) not moved: 12-31 trades" \
    "2021-12-23 2021-12-27 2021-12-28 2021-12-29 2021-12-30 2021-12-31" "$(dates 'start=2021-12-23&end=2022-01-02')"
check "2022: Juneteenth (Sun) on Mon 06-20; 2021: none yet (06-18 trades)" "2022-06-17 2022-06-21 | 2021-06-18" \
    "$(dates 'start=2022-06-17&end=2022-06-21') | $(dates 'start=2021-06-18&end=2021-06-18')"
check "2023: New Year's (Sun) on Mon 01-02" "2023-01-03" "$(dates 'start=2023-01-01&end=2023-01-03')"
check "2026: Independence Day (Sat) on Fri 07-03, and 07-02 is no early close" \
    "2026-07-02 16:00" "$(cal 'start=2026-07-02&end=2026-07-05' >/dev/null; summary '" ".join(x["date"] + " " + x["close"] for x in a)')"
check "2027: Juneteenth (Sat) on Fri 06-18; Christmas (Sat) on Fri 12-24, 12-23 a full day" \
    "2027-06-17 2027-06-21 | 2027-12-23 16:00 2027-12-27 16:00" \
    "$(dates 'start=2027-06-17&end=2027-06-21') | $(cal 'start=2027-12-23&end=2027-12-27' >/dev/null; summary '" ".join(x["date"] + " " + x["close"] for x in a)')"
check "MLK Day from 1998: 1997-01-20 trades, 1998-01-19 does not" "1997-01-20 | " \
    "$(dates 'start=1997-01-20&end=1997-01-20') | $(dates 'start=1998-01-19&end=1998-01-19')"
check "Good Friday moves with Easter: 2019-04-19, 2025-04-18, 2027-03-26 absent" " |  | " \
    "$(dates 'start=2019-04-19&end=2019-04-19') | $(dates 'start=2025-04-18&end=2025-04-18') | $(dates 'start=2027-03-26&end=2027-03-26')"
check "2025: Memorial Day, Labor Day, Thanksgiving and the day after (early)" \
    "2025-05-23 16:00 2025-05-27 16:00 | 2025-08-29 16:00 2025-09-02 16:00 | 2025-11-26 16:00 2025-11-28 13:00" \
    "$(for q in 'start=2025-05-23&end=2025-05-27' 'start=2025-08-29&end=2025-09-02' 'start=2025-11-26&end=2025-11-28'; do cal "$q" >/dev/null; summary '" ".join(x["date"] + " " + x["close"] for x in a)'; done | paste -sd'|' | sed 's/|/ | /g')"
check "DST changes nothing: the local times of 2024-03-08 and 2024-03-11 are equal" \
    "09:30 16:00 0400 2000|09:30 16:00 0400 2000" \
    "$(cal 'start=2024-03-08&end=2024-03-11' >/dev/null; summary '"|".join(" ".join([x["open"], x["close"], x["session_open"], x["session_close"]]) for x in a)')"

# Settlement: T+2 trading days before 2024-05-28, T+1 from then on.
check "settlement around the switch to T+1 (Memorial Day 2024-05-27 in between)" \
    "2024-05-23>2024-05-28 2024-05-24>2024-05-29 2024-05-28>2024-05-29 2024-05-29>2024-05-30" \
    "$(cal 'start=2024-05-23&end=2024-05-29' >/dev/null; summary '" ".join(x["date"] + ">" + x["settlement_date"] for x in a)')"
check "settlement skips holidays and years: 2024-12-31 > 2025-01-02, 2024-11-27 > 2024-11-29" \
    "2024-11-27>2024-11-29 2024-12-31>2025-01-02" \
    "$(cal 'start=2024-11-27&end=2024-11-27' >/dev/null; a1=$(summary 'a[0]["date"] + ">" + a[0]["settlement_date"]'); cal 'start=2024-12-31&end=2024-12-31' >/dev/null; echo "$a1 $(summary 'a[0]["date"] + ">" + a[0]["settlement_date"]')")"

# Defaults, bounds and errors.
ny_today() { TZ=America/New_York date +%F; }
before=$(ny_today)
cal '' >/dev/null
got=$(summary '" ".join(x["date"] for x in a)')
after=$(ny_today)
want=$(dates "start=$before&end=$before")
[ "$before" = "$after" ] || want="$want|$(dates "start=$after&end=$after")"
check_cmd "no start and end: today (New York) only, if it trades ('$got')" \
    bash -c '[ "$1" = "$2" ] || [[ "|$2|" == *"|$1|"* ]]' _ "$got" "$want"
check "start after end: 200 and []" "200 []" "$(cal 'start=2024-03-12&end=2024-03-11') $(cat "$T/cal.json")"
check "clipped to 1970: the first trading day is 1970-01-02" "1970-01-02" \
    "$(cal 'start=1969-12-01&end=1970-01-05' >/dev/null; summary 'a[0]["date"]')"
check "clipped to 2029: the last one is 2029-12-31" "2029-12-31" \
    "$(cal 'start=2029-12-01&end=2031-01-05' >/dev/null; summary 'a[-1]["date"]')"
check "a malformed start: 400 naming it" \
    "400 Invalid format for parameter start: error parsing '2024-13-01' as 2006-01-02 time" \
    "$(cal 'start=2024-13-01') $(summary 'a["message"]')"
check "a malformed end: 400" "400 400 400" "$(cal 'end=2024-02-30') $(cal 'end=2024-1-01') $(cal 'end=2024-01-01T00:00:00Z')"
check "no keys: 401" 401 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SIM_PORT/v2/calendar")"
BARS="http://127.0.0.1:$SIM_PORT/v2/stocks/AAPL/bars?timeframe=1Day&start=2024-01-02&end=2024-01-03"
check "calendar requests spend no bars rate-limit token: the one token is still there" "200 429" \
    "$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$BARS") $(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$BARS")"
check "calendar requests are counted apart; the only 429 is the bars one" "True 1" \
    "$(sim_counter 'c["calendar_requests"] >= 30') $(sim_counter 'c["by_status"]["429"]')"

# Consistency with the bars: every day of 2024 listed <=> it has a SIP day bar,
# and each listed day's SIP minute bars lie in [session_open, session_close) ET.
"$BF_SIM" dump --symbols AAPL,MSFT --timeframe 1Day --start 2024-01-01 --end 2024-12-31T23:59:59Z >"$T/d1.csv"
"$BF_SIM" dump --symbols AAPL --timeframe 1Min --start 2024-01-01 --end 2025-01-01T05:00:00Z >"$T/m1.csv"
check "for every day of 2024: listed by the calendar <=> AAPL and MSFT have a SIP day bar" "252 252 252 0" \
    "$(python3 - "$T/cal2024.json" "$T/d1.csv" <<'PY'
import datetime, json, sys, zoneinfo
ny = zoneinfo.ZoneInfo("America/New_York")
cal = {x["date"] for x in json.load(open(sys.argv[1]))}
bars = {"AAPL": set(), "MSFT": set()}
for line in open(sys.argv[2]):
    sym, t = line.split(",")[:2]
    bars[sym].add(datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(ny).date().isoformat())
print(len(cal), len(bars["AAPL"]), len(bars["MSFT"]), len(cal ^ bars["AAPL"]) + len(cal ^ bars["MSFT"]))
PY
)"
check "every SIP minute bar of 2024 is in its day's calendar session; all 252 days have some" "0 252" \
    "$(python3 - "$T/cal2024.json" "$T/m1.csv" <<'PY'
import datetime, json, sys, zoneinfo
ny = zoneinfo.ZoneInfo("America/New_York")
cal = {x["date"]: (x["session_open"], x["session_close"]) for x in json.load(open(sys.argv[1]))}
bad, days = 0, set()
for line in open(sys.argv[2]):
    t = datetime.datetime.fromisoformat(line.split(",")[1].replace("Z", "+00:00")).astimezone(ny)
    d, hm = t.date().isoformat(), t.strftime("%H%M")
    if d not in cal or not (cal[d][0] <= hm < cal[d][1]):
        bad += 1
    days.add(d)
print(bad, len(days))
PY
)"
check "each 2024 early close has SIP minute bars up to 16:5x ET (and none later, above)" "3" \
    "$(awk -F, '{ print $2 }' "$T/m1.csv" | grep -oE '^2024-(07-03T20|11-29T21|12-24T21):5' | sort -u | wc -l)"
finish
