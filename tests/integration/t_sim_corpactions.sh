#!/usr/bin/env bash
# The simulator's corporate actions (GET /v1/corporate-actions,
# alpaca-more-api.md §4) and what they do to adjusted bars: the static
# records, a split added and processed through /__sim/set (split-adjusted
# bars before its ex-date change by its ratio, raw and later bars stay byte
# for byte), a record that appears late in a window already read, paging
# with limit=1 and tokens bound to their query, errors; then the HOLE symbols'
# hole that is filled later and the IPO symbols that list mid-range.
. "$(dirname "$0")/lib.sh"

sim_start
AUTH=(-H "APCA-API-KEY-ID: $APCA_API_KEY_ID" -H "APCA-API-SECRET-KEY: $APCA_API_SECRET_KEY")
# ca QUERY: status code, then the body in $T/ca.json
ca() { curl -s --max-time 20 -o "$T/ca.json" -w '%{http_code}' "${AUTH[@]}" "http://127.0.0.1:$SIM_PORT/v1/corporate-actions?$1"; }
# summary PYTHON_EXPR over d = the body just fetched, g = its corporate_actions
summary() { python3 -c "import json; d = json.load(open('$T/ca.json')); g = d.get('corporate_actions'); print($1)"; }
# body PATH_AND_QUERY: one bars response body, verbatim
body() { curl -s --max-time 20 "${AUTH[@]}" "http://127.0.0.1:$SIM_PORT$1"; }
# csv: a single-symbol bars body on stdin as dump's CSV lines (number text as served)
csv() {
    python3 -c '
import json, sys
d = json.loads(sys.stdin.read(), parse_float=str, parse_int=str)
for b in d["bars"] or []:
    print(",".join([d["symbol"], b["t"], b["o"], b["h"], b["l"], b["c"], b["v"], b["n"], b["vw"]]))'
}
today=$(TZ=America/New_York date +%F)

# --- the static records -----------------------------------------------------------
check "the FB -> META name change, exactly as §4 shows it" \
    '200 {"name_changes": [{"id": "X", "old_symbol": "FB", "new_symbol": "META", "process_date": "2022-06-09"}]} None' \
    "$(ca 'types=name_change&start=2022-06-09&end=2022-06-09') $(summary 'json.dumps({k: [dict(r, id="X") for r in v] for k, v in g.items()})') $(summary 'd["next_page_token"]')"
check "it is found under the old and the new symbol, not the day after" "1 1 0" \
    "$(ca 'symbols=FB&start=2022-01-01&end=2022-12-31' >/dev/null; summary 'len(g.get("name_changes", []))') $(ca 'symbols=META&start=2022-01-01&end=2022-12-31' >/dev/null; summary 'len(g.get("name_changes", []))') $(ca 'symbols=META&start=2022-06-10&end=2022-12-31' >/dev/null; summary 'len(g.get("name_changes", []))')"
ca 'symbols=AAPL,MSFT&start=2024-01-01&end=2024-12-31' >/dev/null
check "2024 cash dividends of AAPL and MSFT: 8, only that key, the fields of §4" \
    "8 cash_dividends | id symbol cusip rate special foreign process_date ex_date record_date payable_date" \
    "$(summary 'len(g["cash_dividends"])') $(summary '" ".join(g)') | $(summary '" ".join(sorted(set(" ".join(r) for r in g["cash_dividends"])))')"
check "AAPL's 2024-08-12 dividend: rate 0.25, special and foreign false" "0.25 False False 2024-08-15" \
    "$(summary '" ".join(str(x) for r in g["cash_dividends"] if r["symbol"] == "AAPL" and r["ex_date"] == "2024-08-12" for x in (r["rate"], r["special"], r["foreign"], r["payable_date"]))')"
cp "$T/ca.json" "$T/div100.json"
check "before any split: nothing processed today, and no key at all" '200 {"corporate_actions":{},"next_page_token":null}' \
    "$(ca '') $(cat "$T/ca.json")"

# --- paging: limit=1, tokens bound to the query ---------------------------------------
# pages QUERY: follows next_page_token; prints "ids-per-page-count id id …"
pages() {
    local q=$1 tok="" ids=() n=0 code
    while :; do
        code=$(ca "$q${tok:+&page_token=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$tok")}")
        [ "$code" = 200 ] || fail "page $n of $q answered $code: $(cat "$T/ca.json")"
        [ "$(summary 'sum(len(v) for v in g.values())')" -le "${2:-1000}" ] || fail "page $n of $q holds more than ${2:-1000}"
        ids+=($(summary '" ".join(r["id"] for v in g.values() for r in v)'))
        n=$((n + 1))
        tok=$(summary 'd["next_page_token"] or ""')
        [ -n "$tok" ] || break
        cp "$T/ca.json" "$T/last_token_page.json"
        echo "$tok" >"$T/token"
    done
    echo "$n ${ids[*]}"
}
all_ids=$(python3 -c "import json; d = json.load(open('$T/div100.json')); print(' '.join(r['id'] for r in d['corporate_actions']['cash_dividends']))")
check "limit=1: 8 pages of one, the same records in the same order" "8 $all_ids" \
    "$(pages 'symbols=AAPL,MSFT&start=2024-01-01&end=2024-12-31&limit=1' 1)"
check "sort=desc with limit=3: 3 pages, the reverse order" "3 $(tr ' ' '\n' <<<"$all_ids" | tac | paste -sd' ')" \
    "$(pages 'symbols=AAPL,MSFT&start=2024-01-01&end=2024-12-31&limit=3&sort=desc' 3)"
tok=$(cat "$T/token")
qtok=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$tok")
check "a token reused with another limit, symbols, sort or window: 400 invalid page_token" \
    "400 400 400 400 invalid page_token" \
    "$(ca "symbols=AAPL,MSFT&start=2024-01-01&end=2024-12-31&limit=4&sort=desc&page_token=$qtok") $(ca "symbols=AAPL&start=2024-01-01&end=2024-12-31&limit=3&sort=desc&page_token=$qtok") $(ca "symbols=AAPL,MSFT&start=2024-01-01&end=2024-12-31&limit=3&page_token=$qtok") $(ca "symbols=AAPL,MSFT&start=2024-01-02&end=2024-12-31&limit=3&sort=desc&page_token=$qtok") $(summary 'd["message"]')"
check "a foreign token: 400" "400" "$(ca 'start=2024-01-01&page_token=bm9wZQ%3D%3D')"
check "limit counts across types: limit=5 from 2022 gives the name change and 4 dividends" "5 1 4 True" \
    "$(ca 'start=2022-01-01&end=2024-12-31&limit=5' >/dev/null; summary 'sum(len(v) for v in g.values())') $(summary 'len(g["name_changes"])') $(summary 'len(g["cash_dividends"])') $(summary 'd["next_page_token"] is not None')"

# --- errors -----------------------------------------------------------------------------
check "limit 0 and 1001, a bad type, date, order and sort: 400 each" "400 400 400 400 400 400 400" \
    "$(ca 'limit=0') $(ca 'limit=1001') $(ca 'types=forward_split,bogus') $(ca 'start=2024-13-01') $(ca 'start=2024-02-01&end=2024-01-01') $(ca 'sort=up') $(ca 'symbols=bad%20one')"
check "the messages name the problem" "invalid limit: exceeds maximum of 1000|invalid types: bogus|end should not be before start" \
    "$(ca 'limit=1001' >/dev/null; summary 'd["message"]')|$(ca 'types=bogus' >/dev/null; summary 'd["message"]')|$(ca 'start=2024-02-01&end=2024-01-01' >/dev/null; summary 'd["message"]')"
check "a known type without records gives no key" '{}' "$(ca 'types=spin_off,unit_split&start=1970-01-01&end=2029-12-31' >/dev/null; summary 'json.dumps(g)')"
check "no keys: nginx's 401" "401" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SIM_PORT/v1/corporate-actions")"

# --- a split processed now: adjusted bars change --------------------------------------------
D1='/v2/stocks/KO/bars?timeframe=1Day&start=2024-06-03&end=2024-06-14'
M1='/v2/stocks/KO/bars?timeframe=1Min&start=2024-06-07T19:50:00Z&end=2024-06-10T08:09:00Z'
body "$D1" >"$T/raw_d1.json"
body "$M1" >"$T/raw_m1.json"
check "before the split: adjustment=split and all serve the raw bars byte for byte" "same same same" \
    "$(cmp -s "$T/raw_d1.json" <(body "$D1&adjustment=split") && echo same) $(cmp -s "$T/raw_d1.json" <(body "$D1&adjustment=all") && echo same) $(cmp -s "$T/raw_m1.json" <(body "$M1&adjustment=split") && echo same)"
check "split=KO:2024-06-10:4:1" '{"ok":true}' "$(sim_get '/__sim/set?split=KO:2024-06-10:4:1')"
check "raw bars are unchanged byte for byte (day and minute)" "same same" \
    "$(cmp -s "$T/raw_d1.json" <(body "$D1") && echo same) $(cmp -s "$T/raw_m1.json" <(body "$D1" >/dev/null; body "$M1") && echo same)"
check "adjustment=dividend is unchanged too" "same" "$(cmp -s "$T/raw_d1.json" <(body "$D1&adjustment=dividend") && echo same)"
# adjcheck RAW_CSV ADJ_CSV EX NEW OLD: "before after bad": bars before EX divided by NEW/OLD
# (half up to the cent, vw to 4 places inside [l, h], volume times NEW/OLD, n equal), later ones equal.
cat >"$T/adjcheck.py" <<'PY'
import sys
from decimal import Decimal, ROUND_HALF_UP
raw = [l.split(",") for l in open(sys.argv[1]).read().split()]
adj = [l.split(",") for l in open(sys.argv[2]).read().split()]
ex, new, old = sys.argv[3], Decimal(sys.argv[4]), Decimal(sys.argv[5])
before = after = bad = 0
if len(raw) != len(adj) or not raw:
    bad = 1
for r, a in zip(raw, adj):
    if r[1] >= ex:
        after += 1
        bad += r != a
        continue
    before += 1
    px = [(Decimal(x) * old / new).quantize(Decimal("0.01"), ROUND_HALF_UP) for x in r[2:6]]
    vw = (Decimal(r[8]) * old / new).quantize(Decimal("0.0001"), ROUND_HALF_UP)
    vw = min(max(vw, px[2]), px[1])
    v = (Decimal(r[6]) * new / old).quantize(Decimal(1), ROUND_HALF_UP)
    want = r[:2] + ["%.2f" % p for p in px] + [str(v), r[7], "%.4f" % vw]
    bad += want != a
print(before, after, bad)
PY
csv <"$T/raw_d1.json" >"$T/raw_d1.csv"
csv <"$T/raw_m1.json" >"$T/raw_m1.csv"
body "$D1&adjustment=split" | csv >"$T/split_d1.csv"
body "$M1&adjustment=split" | csv >"$T/split_m1.csv"
check "day bars: 5 before 2024-06-10 divided by 4 (volume x4), 4 from it on unchanged" "5 4 0" \
    "$(python3 "$T/adjcheck.py" "$T/raw_d1.csv" "$T/split_d1.csv" 2024-06-10T04:00:00Z 4 1)"
check "minute bars: 06-07 from 19:50Z (247 bars) adjusted, the first 10 of 06-10 (08:00Z on) not" "247 10 0" \
    "$(python3 "$T/adjcheck.py" "$T/raw_m1.csv" "$T/split_m1.csv" 2024-06-10T04:00:00Z 4 1)"
check "adjustment=all and raw,split serve the same adjusted bars" "same same" \
    "$(cmp -s <(body "$D1&adjustment=split") <(body "$D1&adjustment=all") && echo same) $(cmp -s <(body "$D1&adjustment=split") <(body "$D1&adjustment=raw,split") && echo same)"
check "dump --adjustment split --split KO:2024-06-10:4:1 prints the served adjusted bars" "$(cat "$T/split_d1.csv")" \
    "$("$BF_SIM" dump --symbols KO --timeframe 1Day --start 2024-06-03 --end 2024-06-14 --adjustment split --split KO:2024-06-10:4:1)"
check "dump without --adjustment prints raw" "$(cat "$T/raw_d1.csv")" \
    "$("$BF_SIM" dump --symbols KO --timeframe 1Day --start 2024-06-03 --end 2024-06-14 --split KO:2024-06-10:4:1)"
ca "start=$today" >/dev/null
after=$(TZ=America/New_York date +%F) # the sim's today is one of the two, even at midnight
got=$(summary '" ".join([str(len(g["forward_splits"]))] + [str(g["forward_splits"][0][k]) for k in ("symbol", "new_rate", "old_rate", "process_date", "ex_date", "record_date", "payable_date")])')
want="1 KO 4 1 $today 2024-06-10 2024-06-06 2024-06-07"
[ "$got" = "1 KO 4 1 $after 2024-06-10 2024-06-06 2024-06-07" ] && want=$got
check "the split is listed as processed today, with its rates and dates" "$want" "$got"
check "forward_splits have exactly the fields of §4" "id symbol cusip new_rate old_rate process_date ex_date record_date payable_date" \
    "$(summary '" ".join(g["forward_splits"][0])')"

# A reverse split (NEW < OLD) multiplies earlier prices.
check "split=JPM:2024-06-10:1:5 (reverse)" '{"ok":true}' "$(sim_get '/__sim/set?split=JPM:2024-06-10:1:5')"
check "listed under reverse_splits with the fields of §4" "JPM 1 5 | id symbol old_cusip new_cusip new_rate old_rate process_date ex_date" \
    "$(ca 'types=reverse_split&start=2024-07-01' >/dev/null; summary '" ".join(str(g["reverse_splits"][0][k]) for k in ("symbol", "new_rate", "old_rate"))') | $(summary '" ".join(g["reverse_splits"][0])')"
body "${D1/KO/JPM}" | csv >"$T/jpm_raw.csv"
body "${D1/KO/JPM}&adjustment=split" | csv >"$T/jpm_split.csv"
check "JPM day bars before the ex-date: prices x5, volume /5" "5 4 0" \
    "$(python3 "$T/adjcheck.py" "$T/jpm_raw.csv" "$T/jpm_split.csv" 2024-06-10T04:00:00Z 1 5)"

# --- a record that appears late ----------------------------------------------------------
W='types=forward_split,reverse_split&start=2024-06-01&end=2024-06-30'
check "the June 2024 window, read now: no split processed in it" "200 {}" "$(ca "$W") $(summary 'json.dumps(g)')"
check "split=XOM:2024-06-17:2:1&split_process_date=2024-06-14" '{"ok":true}' \
    "$(sim_get '/__sim/set?split=XOM:2024-06-17:2:1&split_process_date=2024-06-14')"
check "the same window read again now holds it (process_date 2024-06-14)" "XOM 2024-06-14 2024-06-17" \
    "$(ca "$W" >/dev/null; summary '" ".join(r[k] for r in g["forward_splits"] for k in ("symbol", "process_date", "ex_date"))')"
check "a window from 2024-07-01 to today does not" "KO" "$(ca 'types=forward_split&start=2024-07-01' >/dev/null; summary '" ".join(r["symbol"] for r in g["forward_splits"])')"
check "and it adjusts XOM at once: all 9 day bars are before its ex-date" "9 0 0" \
    "$(python3 "$T/adjcheck.py" <(body "${D1/KO/XOM}" | csv) <(body "${D1/KO/XOM}&adjustment=split" | csv) 2024-06-17T04:00:00Z 2 1)"
check "bad split knobs: 400 each, nothing added" "400 400 400 400 400 3" \
    "$(for q in 'split=KO:2024-06-10:4:4' 'split=KO:2024-06-10:0:1' 'split=KO:2024-13-10:4:1' 'split_process_date=2024-06-01' "split=KO:2024-06-10:4:1&split_process_date=2099-01-01"; do curl -s -o /dev/null -w '%{http_code} ' "http://127.0.0.1:$SIM_PORT/__sim/set?$q"; done)$(ca 'types=forward_split,reverse_split&start=2024-01-01' >/dev/null; summary 'sum(len(v) for v in g.values())')"
check "clear_actions=1" '{"ok":true}' "$(sim_get '/__sim/set?clear_actions=1')"
check "the added splits are gone, the static records stay" '{} 8' \
    "$(ca 'types=forward_split,reverse_split&start=2024-01-01' >/dev/null; summary 'json.dumps(g)') $(ca 'symbols=AAPL,MSFT&start=2024-01-01&end=2024-12-31' >/dev/null; summary 'len(g["cash_dividends"])')"
check "adjusted bars equal raw again" "same" "$(cmp -s "$T/raw_d1.json" <(body "$D1&adjustment=split") && echo same)"

# --- HOLE symbols: 10:00-11:00 ET of every trading day whose day of month is 15 ----------
H='/v2/stocks/HOLEX/bars?timeframe=1Min&start=2024-03-15T08:00:00Z&end=2024-03-16T00:00:00Z'
body "$H" | csv >"$T/hole.csv"
"$BF_SIM" dump --symbols HOLEX --timeframe 1Min --start 2024-03-15T08:00:00Z --end 2024-03-16T00:00:00Z >"$T/filled.csv"
"$BF_SIM" dump --symbols HOLEX --timeframe 1Min --start 2024-03-15T08:00:00Z --end 2024-03-16T00:00:00Z --with-holes >"$T/holed.csv"
check "served: no bar from 10:00 to 11:00 EDT (14:00Z-14:59Z) on 2024-03-15" "0" \
    "$(awk -F, '$2 >= "2024-03-15T14:00" && $2 < "2024-03-15T15:00"' "$T/hole.csv" | wc -l)"
check "dump prints the hole filled; --with-holes prints what is served" "$(($(wc -l <"$T/hole.csv") + $(awk -F, '$2 >= "2024-03-15T14:00" && $2 < "2024-03-15T15:00"' "$T/filled.csv" | wc -l))) same" \
    "$(wc -l <"$T/filled.csv") $(cmp -s "$T/hole.csv" "$T/holed.csv" && echo same)"
check_cmd "the hole is an hour of bars ($(awk -F, '$2 >= "2024-03-15T14:00" && $2 < "2024-03-15T15:00"' "$T/filled.csv" | wc -l) in dump)" \
    test "$(awk -F, '$2 >= "2024-03-15T14:00" && $2 < "2024-03-15T15:00"' "$T/filled.csv" | wc -l)" -ge 55
n_iex=$("$BF_SIM" dump --symbols HOLEX --feed iex --timeframe 1Min --start 2024-11-15T15:00:00Z --end 2024-11-15T15:59:00Z | wc -l)
check "IEX and EST too: 2024-11-15 serves none of 15:00Z-15:59Z on IEX" "0" \
    "$(body '/v2/stocks/HOLEX/bars?timeframe=1Min&feed=iex&start=2024-11-15T15:00:00Z&end=2024-11-15T15:59:00Z' | csv | wc -l)"
check_cmd "... where dump has $n_iex bars" test "$n_iex" -ge 55
check "the 14th has no hole" "$("$BF_SIM" dump --symbols HOLEX --timeframe 1Min --start 2024-03-14T14:00:00Z --end 2024-03-14T14:59:00Z)" \
    "$(body '/v2/stocks/HOLEX/bars?timeframe=1Min&start=2024-03-14T14:00:00Z&end=2024-03-14T14:59:00Z' | csv)"
check "fill_holes=1" '{"ok":true}' "$(sim_get '/__sim/set?fill_holes=1')"
check "now the hole is served, equal to dump" "$(cat "$T/filled.csv")" "$(body "$H" | csv)"
sim_get '/__sim/set?fill_holes=0' >/dev/null
check "fill_holes=0 hides it again" "$(cat "$T/hole.csv")" "$(body "$H" | csv)"

# --- IPO symbols: no bars before 2024-06-03 (New York) ----------------------------------------
check "IPO: the first day bar is 2024-06-03" "2024-06-03T04:00:00Z" \
    "$(body '/v2/stocks/IPOX/bars?timeframe=1Day&start=2024-01-01&end=2024-06-30' | csv | head -1 | cut -d, -f2)"
check "IPO: no minute bars on 2024-05-31, bars on 2024-06-03 from 08:00Z" "0 2024-06-03T08:00:00Z" \
    "$(body '/v2/stocks/IPOX/bars?timeframe=1Min&start=2024-05-31T00:00:00Z&end=2024-06-03T07:59:59Z' | csv | wc -l) $("$BF_SIM" dump --symbols IPOX --timeframe 1Min --start 2024-05-01 --end 2024-06-03T09:00:00Z | head -1 | cut -d, -f2)"
"$BF_SIM" --help >"$T/help.txt"
check "help documents every endpoint and knob of this test" "" \
    "$(for w in '/v1/corporate-actions?' '/v2/calendar?' 'split=SYM:' 'split_process_date=' 'clear_actions=1' 'fill_holes=0|1' '--fill-holes' '"HOLE' '"IPO' '--with-holes' '--adjustment A' '--split SYM'; do grep -qF -- "$w" "$T/help.txt" || echo "missing $w"; done)"
finish
