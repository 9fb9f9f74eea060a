#!/usr/bin/env bash
# The simulator's trading-API asset list (GET /v2/assets, alpaca-more-api.md
# §2): a plain JSON array of about 11,000 deterministic symbols with the
# documented fields, the status / asset_class / exchange filters, 422 for bad
# parameters, 401 without keys, a symbol made to disappear (and come back)
# through /__sim/set, and bars served for every listed symbol.
. "$(dirname "$0")/lib.sh"

sim_start --remove-asset S0007A
AUTH=(-H "APCA-API-KEY-ID: $APCA_API_KEY_ID" -H "APCA-API-SECRET-KEY: $APCA_API_SECRET_KEY")
# assets QUERY: status code, then the body in $T/assets.json
assets() { curl -s --max-time 20 -o "$T/assets.json" -w '%{http_code}' "${AUTH[@]}" "http://127.0.0.1:$SIM_PORT/v2/assets?$1"; }
# summary PYTHON_EXPR over a = the array just fetched
summary() { python3 -c "import json, collections; a = json.load(open('$T/assets.json')); print($1)"; }

check "active us_equity answers 200" 200 "$(assets 'status=active&asset_class=us_equity')"
n_active=$(summary 'len(a)')
check_cmd "about 11,000 active symbols ($n_active)" test "$n_active" -ge 10000 -a "$n_active" -le 12000
check "every element has exactly the documented fields" \
    "attributes class easy_to_borrow exchange fractionable id marginable name shortable status symbol tradable" \
    "$(summary '" ".join(sorted(set().union(*[set(x) for x in a])))')"
check "all are active us_equity" "active us_equity" "$(summary '" ".join(sorted(set(x["status"] for x in a)) + sorted(set(x["class"] for x in a)))')"
check "spread over the five exchanges" "AMEX ARCA BATS NASDAQ NYSE" "$(summary '" ".join(sorted(set(x["exchange"] for x in a)))')"
check "symbols with a dot are listed" "BF.A BF.B BRK.A BRK.B HEI.A" "$(summary '" ".join(x["symbol"] for x in a if "." in x["symbol"])')"
check "well-known and generated symbols are there, S0007A (removed at start) is not" "True True True False" \
    "$(summary '" ".join(str(s in set(x["symbol"] for x in a)) for s in ("AAPL", "S000A", "S9999A", "S0007A"))')"
check "ids are unique" "$n_active" "$(summary 'len(set(x["id"] for x in a))')"
first=$(summary 'a[0]["id"] + a[-1]["symbol"]')
assets 'status=active&asset_class=us_equity' >/dev/null
check "deterministic: the same list twice" "$first" "$(summary 'a[0]["id"] + a[-1]["symbol"]')"

check "inactive answers 200" 200 "$(assets 'status=inactive')"
n_inactive=$(summary 'len(a)')
check_cmd "some symbols are inactive ($n_inactive)" test "$n_inactive" -ge 100
check "inactive lists only inactive, FB and TWTR among them" "inactive True" \
    "$(summary '" ".join(sorted(set(x["status"] for x in a))) + " " + str({"FB", "TWTR"} <= set(x["symbol"] for x in a))')"
assets 'status=all' >/dev/null
check "all = active + inactive" "$((n_active + n_inactive))" "$(summary 'len(a)')"
assets '' >/dev/null
check "no status = all" "$((n_active + n_inactive))" "$(summary 'len(a)')"
assets 'status=active&exchange=NYSE' >/dev/null
check "exchange=NYSE lists NYSE only" "NYSE" "$(summary '" ".join(sorted(set(x["exchange"] for x in a)))')"
check "unknown exchange: 200 and []" "200 0" "$(assets 'status=active&exchange=NOPE') $(summary 'len(a)')"
check "bad status: 422" "422 40010001" "$(assets 'status=sometimes') $(summary 'a["code"]')"
check "bad asset_class: 422" "422" "$(assets 'asset_class=bonds')"
check "crypto: pairs with a slash" "BTC/USD ETH/USD" "$(assets 'asset_class=crypto' >/dev/null; summary '" ".join(x["symbol"] for x in a)')"
check "no keys: 401" 401 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SIM_PORT/v2/assets")"
check "asset requests spend no bars rate-limit budget, and are counted" "0 $(sim_counter 'c["requests"]')" \
    "$(sim_counter 'c["by_status"]["429"]') $(sim_counter 'c["assets_requests"]')"

# A symbol disappears from the list, and comes back.
check "remove_asset" '{"ok":true}' "$(sim_get '/__sim/set?remove_asset=AAPL,BRK.B')"
assets 'status=active' >/dev/null
check "AAPL and BRK.B are gone: two fewer" "$((n_active - 2)) False False" \
    "$(summary '" ".join([str(len(a))] + [str(s in set(x["symbol"] for x in a)) for s in ("AAPL", "BRK.B")])')"
check "a malformed symbol is refused" 400 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SIM_PORT/__sim/set?remove_asset=bad%20one")"
sim_get '/__sim/set?restore_assets=1' >/dev/null
assets 'status=active' >/dev/null
check "restore_assets brings every symbol back (S0007A too)" "$((n_active + 1)) True" \
    "$(summary '" ".join([str(len(a)), str("S0007A" in set(x["symbol"] for x in a))])')"

# Every listed symbol has bars: a sample of them, BRK.B included.
assets 'status=active' >/dev/null
sample=$(summary '",".join(["BRK.B"] + [x["symbol"] for x in a][::997])')
got=$("$BF_SIM" dump --symbols "$sample" --timeframe 1Day --start 2024-01-02 --end 2024-01-31 | cut -d, -f1 | sort -u | paste -sd,)
check "bars for listed symbols ($sample)" "$(tr , '\n' <<<"$sample" | sort | paste -sd,)" "$got"
check "help documents /v2/assets and remove_asset" "2" \
    "$("$BF_SIM" --help | grep -c -e '/v2/assets?status=' -e '--remove-asset')"
finish
