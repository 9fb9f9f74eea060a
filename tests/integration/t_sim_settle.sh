#!/usr/bin/env bash
# The simulator's calendar and bars that are not final yet (alpaca-more-api.md
# §3, §6): the NYSE holidays and early closes in the intraday sessions, DST,
# "XX…" symbols that trade around the clock, the partial bar of "now" that
# only grows, preliminary values inside the settle window (made deterministic
# with /__sim/set?settle_seconds=), and IEX values that differ from SIP.
. "$(dirname "$0")/lib.sh"

sim_start
# bars PATH_AND_QUERY [1]: every page of a bars request (following
# next_page_token; only the first with a third argument) as `alpaca-sim dump`
# CSV lines, the numbers' text as served.
cat >"$T/bars.py" <<'PY'
import json, sys, urllib.parse, urllib.request
port, path = sys.argv[1], sys.argv[2]
one_page = len(sys.argv) > 3
hdr = {"APCA-API-KEY-ID": "test-key", "APCA-API-SECRET-KEY": "test-secret"}
tok = None
while True:
    url = "http://127.0.0.1:%s%s" % (port, path)
    if tok:
        url += "&page_token=" + urllib.parse.quote(tok, safe="")
    with urllib.request.urlopen(urllib.request.Request(url, headers=hdr), timeout=20) as r:
        d = json.loads(r.read(), parse_float=str, parse_int=str)
    groups = {d["symbol"]: d["bars"] or []} if "symbol" in d else d["bars"]
    for sym in sorted(groups):
        for b in groups[sym]:
            print(",".join([sym, b["t"], b["o"], b["h"], b["l"], b["c"], b["v"], b["n"], b["vw"]]))
    tok = d["next_page_token"]
    if not tok or one_page:
        break
PY
bars() { python3 "$T/bars.py" "$SIM_PORT" "$@"; }
dump() { "$BF_SIM" dump "$@"; }
# first_last CSV-producing-command...: "first-t last-t count"
first_last() { "$@" | awk -F, 'NR == 1 { f = $2 } { l = $2; n++ } END { print f, l, n + 0 }'; }

# --- the calendar in the sessions ---------------------------------------------
check "early close 2024-11-29 (day after Thanksgiving): SIP 04:00-17:00 ET = 09:00Z-21:59Z" \
    "2024-11-29T09:00:00Z 2024-11-29T21:59:00Z 771" \
    "$(first_last bars '/v2/stocks/AAPL/bars?timeframe=1Min&start=2024-11-29T05:00:00Z&end=2024-11-30T05:00:00Z')"
check "early close: IEX 08:00-13:00 ET = 13:00Z-17:59Z" "2024-11-29T13:00:00Z 2024-11-29T17:59:00Z" \
    "$(first_last bars '/v2/stocks/AAPL/bars?timeframe=1Min&feed=iex&start=2024-11-29T05:00:00Z&end=2024-11-30T05:00:00Z' | cut -d' ' -f1,2)"
bars '/v2/stocks/bars?symbols=AAPL,MSFT&timeframe=1Min&start=2024-11-29T05:00:00Z&end=2024-11-30T05:00:00Z&limit=500' >"$T/served.csv"
dump --symbols AAPL,MSFT --timeframe 1Min --start 2024-11-29T05:00:00Z --end 2024-11-30T05:00:00Z >"$T/dump.csv"
check "early close: served bars (4 pages of 500) equal dump byte for byte" "$(wc -l <"$T/dump.csv") $(md5sum <"$T/dump.csv")" \
    "$(wc -l <"$T/served.csv") $(md5sum <"$T/served.csv")"
check "no SIP bar at or after 17:00 ET on the early close" "0" "$(awk -F, '$2 >= "2024-11-29T22:00:00Z"' "$T/dump.csv" | wc -l)"
check "a normal day (2024-11-27) runs to 20:00 ET = 01:00Z" "2024-11-28T00:59:00Z" \
    "$(first_last dump --symbols AAPL --timeframe 1Min --start 2024-11-27T05:00:00Z --end 2024-11-28T05:00:00Z | cut -d' ' -f2)"
check "early close: IEX sees a session that ends at 13:00 ET, SIP at 17:00 ET (2024-12-24)" \
    "2024-12-24T17:59:00Z 2024-12-24T21:59:00Z" \
    "$(first_last dump --symbols AAPL --timeframe 1Min --feed iex --start 2024-12-24T05:00:00Z --end 2024-12-25T05:00:00Z | cut -d' ' -f2) $(first_last dump --symbols AAPL --timeframe 1Min --start 2024-12-24T05:00:00Z --end 2024-12-25T05:00:00Z | cut -d' ' -f2)"
check "DST: Monday 2024-03-11 (EDT) SIP from 04:00 ET = 08:00Z to 23:59Z" \
    "2024-03-11T08:00:00Z 2024-03-11T23:59:00Z" \
    "$(first_last bars '/v2/stocks/AAPL/bars?timeframe=1Min&start=2024-03-11T04:00:00Z&end=2024-03-12T04:00:00Z' | cut -d' ' -f1,2)"
check "DST: Monday 2024-11-04 (EST) SIP from 04:00 ET = 09:00Z to 00:59Z" \
    "2024-11-04T09:00:00Z 2024-11-05T00:59:00Z" \
    "$(first_last bars '/v2/stocks/AAPL/bars?timeframe=1Min&start=2024-11-04T05:00:00Z&end=2024-11-05T05:00:00Z' | cut -d' ' -f1,2)"
# 06:00Z to 03:59Z the next day holds 04:00-20:00 ET under EDT and EST alike.
for day in 2024-03-29 2024-06-19 2024-11-28 2024-12-25 2024-03-10; do
    next=$(date -u -d "$day + 1 day" +%F)
    check "no intraday bars on $day (holiday or Sunday), SIP or IEX" "0 0" \
        "$(bars "/v2/stocks/AAPL/bars?timeframe=1Min&start=${day}T06:00:00Z&end=${next}T03:59:59Z" | wc -l) $(bars "/v2/stocks/AAPL/bars?timeframe=1Min&feed=iex&start=${day}T06:00:00Z&end=${next}T03:59:59Z" | wc -l)"
done
check "the day before Good Friday has its full session" "960" \
    "$(bars '/v2/stocks/XXTEST/bars?timeframe=1Min&start=2024-03-28T08:00:00Z&end=2024-03-28T23:59:59Z' | wc -l)"
check "day bars of Good Friday week and Juneteenth week skip the holiday" \
    "2024-03-25 2024-03-26 2024-03-27 2024-03-28 2024-06-17 2024-06-18 2024-06-20 2024-06-21" \
    "$(bars '/v2/stocks/AAPL/bars?timeframe=1Day&start=2024-03-25&end=2024-03-31' | cut -d, -f2 | cut -c1-10 | paste -sd' ') $(bars '/v2/stocks/AAPL/bars?timeframe=1Day&start=2024-06-17&end=2024-06-23' | cut -d, -f2 | cut -c1-10 | paste -sd' ')"
check "2024 has 252 trading days (SIP day bars)" "252" "$(dump --symbols AAPL --timeframe 1Day --start 2024-01-01 --end 2024-12-31T23:59:59Z | wc -l)"

# --- IEX is another feed, with its own values ------------------------------------
sip=$(bars '/v2/stocks/AAPL/bars?timeframe=1Min&start=2024-11-29T15:00:00Z&end=2024-11-29T15:00:00Z')
iex=$(bars '/v2/stocks/AAPL/bars?timeframe=1Min&feed=iex&start=2024-11-29T15:00:00Z&end=2024-11-29T15:00:00Z')
check "the same minute on SIP and IEX: both served" "2024-11-29T15:00:00Z 2024-11-29T15:00:00Z" "$(cut -d, -f2 <<<"$sip") $(cut -d, -f2 <<<"$iex")"
check "IEX values differ from SIP (volume, close)" "different" \
    "$([ "$(cut -d, -f6,7 <<<"$sip")" != "$(cut -d, -f6,7 <<<"$iex")" ] && echo different)"
check "IEX served equals IEX dump" "$(dump --symbols AAPL --timeframe 1Min --feed iex --start 2024-11-29T15:00:00Z --end 2024-11-29T15:00:00Z)" "$iex"

# --- XX symbols trade around the clock ------------------------------------------
check "XX: every minute of Saturday 2024-03-09, every feed" "1440 1440" \
    "$(bars '/v2/stocks/XXTEST/bars?timeframe=1Min&start=2024-03-09T05:00:00Z&end=2024-03-10T04:59:59Z' | wc -l) $(dump --symbols XXTEST --timeframe 1Min --feed iex --start 2024-03-09T05:00:00Z --end 2024-03-10T04:59:59Z | wc -l)"
check "XX: a day bar for every day of the week, holidays too (2024-03-25..31)" "7" \
    "$(bars '/v2/stocks/XXTEST/bars?timeframe=1Day&start=2024-03-25&end=2024-03-31T23:59:59Z' | wc -l)"
check "XX: the 23-hour New York day of 2024-03-10 has 23 hour bars" "23" \
    "$(bars '/v2/stocks/XXTEST/bars?timeframe=1Hour&start=2024-03-10T05:00:00Z&end=2024-03-11T03:59:59Z' | wc -l)"

# --- preliminary bars: the settle window -------------------------------------------
Q='/v2/stocks/bars?symbols=AAPL,XXTEST&timeframe=1Min&start=2024-11-29T14:30:00Z&end=2024-11-29T14:39:00Z'
dump --symbols AAPL,XXTEST --timeframe 1Min --start 2024-11-29T14:30:00Z --end 2024-11-29T14:39:00Z >"$T/final.csv"
check "by default (settle 30 s) old bars are final" "$(cat "$T/final.csv")" "$(bars "$Q")"
check "settle_seconds=3155760000 (100 years)" '{"ok":true}' "$(sim_get '/__sim/set?settle_seconds=3155760000')"
bars "$Q" >"$T/prelim.csv"
# Every preliminary bar: same t/o/h/l/c, volume 1-5 % lower, n not higher (lower when > 1), vw changed.
check "inside the settle window every bar is preliminary (20 bars differ from dump as documented)" "20 0" \
    "$(python3 - "$T/final.csv" "$T/prelim.csv" <<'PY'
import sys
f = [l.split(",") for l in open(sys.argv[1]).read().split()]
p = [l.split(",") for l in open(sys.argv[2]).read().split()]
bad = 0 if len(f) == len(p) else 1
for a, b in zip(f, p):
    v, vp, n, np_ = int(a[6]), int(b[6]), int(a[7]), int(b[7])
    ok = a[:6] == b[:6] and v * 0.95 <= vp < v and np_ <= n and (np_ < n or n == 1) and a[8] != b[8]
    bad += not ok
print(len(p), bad)
PY
)"
check "preliminary values are deterministic: a second read is identical" "$(cat "$T/prelim.csv")" "$(bars "$Q")"
check "settle_seconds=0" '{"ok":true}' "$(sim_get '/__sim/set?settle_seconds=0')"
check "after the settle window the same bars equal dump byte for byte" "$(cat "$T/final.csv")" "$(bars "$Q")"
check "a negative settle_seconds is refused" "400" \
    "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SIM_PORT/__sim/set?settle_seconds=-1")"

# --- the partial bar of "now" ---------------------------------------------------------
# A settle window of an hour: a bar read now is partial (or, had its minute
# ended meanwhile, preliminary), never final, however slow the machine is.
sim_get '/__sim/set?settle_seconds=3600' >/dev/null
# Reads the latest XXNOW 1Min bar until one bar has been read twice with
# different volumes; fails at once if a volume ever shrinks. Prints "t v1 v2 o".
cat >"$T/grow.py" <<'PY'
import subprocess, sys, time
port, bars_py, budget = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.time() + budget
seen = {}
while time.time() < deadline:
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 300))
    out = subprocess.run(["python3", bars_py, port,
                          "/v2/stocks/XXNOW/bars?timeframe=1Min&start=" + start],
                         check=True, capture_output=True, text=True).stdout.split()
    f = out[-1].split(",")
    t, o, v = f[1], f[2], int(f[6])
    if t in seen and v < seen[t][-1]:
        print("shrank", t, seen[t][-1], v)
        sys.exit(1)
    if t in seen and v > seen[t][0]:
        print(t, seen[t][0], v, o)
        sys.exit(0)
    seen.setdefault(t, []).append(v)
    time.sleep(0.2)
print("no growth seen", seen)
sys.exit(1)
PY
grow=$(python3 "$T/grow.py" "$SIM_PORT" "$T/bars.py" "$(scaled 60)") || fail "partial bar: $grow"
read -r gt gv1 gv2 go <<<"$grow"
log "partial bar $gt: volume $gv1 then $gv2"
final=$(dump --symbols XXNOW --timeframe 1Min --start "$gt" --end "$gt")
check "the bar that grew exists in dump with the same open" "$gt $go" "$(cut -d, -f2,3 <<<"$final" | tr , ' ')"
check_cmd "partial volumes grow and stay below the final one ($gv1 < $gv2 < $(cut -d, -f7 <<<"$final"))" \
    test "$gv1" -lt "$gv2" -a "$gv2" -lt "$(cut -d, -f7 <<<"$final")"
# The current Day, Week and Month bars are partial too: below the final volume, same open.
since=$(date -u -d '-100 days' +%F)
for tf in 1Hour 1Day 1Week 1Month; do
    cur=$(bars "/v2/stocks/XXNOW/bars?timeframe=$tf&start=$since&sort=desc&limit=1" 1)
    ct=$(cut -d, -f2 <<<"$cur")
    fin=$(dump --symbols XXNOW --timeframe "$tf" --start "$ct" --end "$ct")
    check "$tf: the current bar ($ct) has the final open" "$(cut -d, -f3 <<<"$fin")" "$(cut -d, -f3 <<<"$cur")"
    check_cmd "$tf: its volume $(cut -d, -f7 <<<"$cur") is below the final $(cut -d, -f7 <<<"$fin")" \
        test "$(cut -d, -f7 <<<"$cur")" -lt "$(cut -d, -f7 <<<"$fin")"
done
check "help documents --settle-seconds, settle_seconds and XX" "3" \
    "$("$BF_SIM" --help | grep -c -e '--settle-seconds' -e 'settle_seconds=' -e '"XX')"
finish
