#!/usr/bin/env bash
# The simulator's fixed-window rate limiter (--rate-window, /__sim/set?rate_window=):
# at most N requests in each epoch-aligned window, 429 without any rate-limit
# header beyond it, and on every 200 X-RateLimit-Limit / Remaining / Reset
# (Limit per minute, Reset in epoch seconds: the end of the binding window), as
# alpaca-bars-api.md §6 says.
. "$(dirname "$0")/lib.sh"

sim_start --rate-window 1s:10
URL="http://127.0.0.1:$SIM_PORT/v2/stocks/AAPL/bars?timeframe=1Day&start=2024-01-02&end=2024-01-03"
AUTH=(-H "APCA-API-KEY-ID: $APCA_API_KEY_ID" -H "APCA-API-SECRET-KEY: $APCA_API_SECRET_KEY")

# burst N: N requests on one connection as fast as curl sends them; prints one
# line per response: "status limit remaining reset", "-" for an absent header.
burst() {
    local args=() i
    for ((i = 0; i < $1; i++)); do args+=("$URL" -o /dev/null); done
    curl -s "${AUTH[@]}" -D - "${args[@]}" | tr -d '\r' | awk '
        /^HTTP\// { if (st) print st, l, r, z; st = $2; l = r = z = "-" }
        tolower($1) == "x-ratelimit-limit:" { l = $2 }
        tolower($1) == "x-ratelimit-remaining:" { r = $2 }
        tolower($1) == "x-ratelimit-reset:" { z = $2 }
        END { if (st) print st, l, r, z }'
}

# Start just after a second begins, so 25 requests fall in one or two windows.
wait_for "the start of a second" 5 python3 -c "import time; f = time.time() % 1; exit(0 if 0.02 < f < 0.3 else 1)"
t0=$(python3 -c 'import time; print(int(time.time()))')
burst 25 >"$T/b1.txt"
t1=$(python3 -c 'import time; print(int(time.time()))')
cat "$T/b1.txt" >&2
if [ "$t0" = "$t1" ]; then
    check "one window: 10 answered 200, 15 answered 429" "10 15" \
        "$(grep -c '^200 ' "$T/b1.txt") $(grep -c '^429 ' "$T/b1.txt")"
fi
check "never more than 10 answered 200 in one window" "" \
    "$(awk '$1 == 200 { n[$4]++ } END { for (z in n) if (n[z] > 10) print z, n[z] }' "$T/b1.txt")"
check "no 200 without the three headers" "0" "$(grep '^200 ' "$T/b1.txt" | grep -c -- ' - ' || true)"
check "no 429 with a rate-limit header" "0" "$(grep '^429 ' "$T/b1.txt" | grep -vc '^429 - - -$' || true)"
check "the first 200 of the window: limit 600/min, 9 left, reset = the window's end" "600 9 $((t0 + 1))" \
    "$(head -1 "$T/b1.txt" | cut -d' ' -f2-)"
check "Remaining counts down to 0 in the window" "9 8 7 6 5 4 3 2 1 0" \
    "$(awk -v z=$((t0 + 1)) '$1 == 200 && $4 == z { printf "%s%s", sep, $3; sep = " " }' "$T/b1.txt")"
check "the counters agree" "25" "$(sim_counter 'c["by_status"]["200"] + c["by_status"]["429"]')"

# A new window has room again.
wait_for "the next window" 5 python3 -c "import time; exit(0 if int(time.time()) > $t1 else 1)"
check "a new window answers 200 again" "200" "$(burst 1 | cut -d' ' -f1)"

# Changed at run time: a 60 s window beside the 1 s one; the binding one is reported.
check "rate_window set" '{"ok":true}' "$(sim_get '/__sim/set?rate_window=1s:10,60s:3')"
burst 5 >"$T/b2.txt"
cat "$T/b2.txt" >&2
check "the per-minute window of 3 binds: 3 answered 200" "3" "$(grep -c '^200 ' "$T/b2.txt")"
m_end=$(python3 -c "import time; print((int(time.time()) // 60 + 1) * 60)")
last200=$(grep '^200 ' "$T/b2.txt" | tail -1)
check "its headers: limit 3/min, 0 left" "3 0" "$(cut -d' ' -f2,3 <<<"$last200")"
check_cmd "reset at the end of the minute ($last200 vs $m_end)" test "$(cut -d' ' -f4 <<<"$last200")" -ge $((m_end - 1)) -a "$(cut -d' ' -f4 <<<"$last200")" -le "$m_end"
check "a bad window is refused" "400" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SIM_PORT/__sim/set?rate_window=1x:3")"
sim_get '/__sim/set?rate_window=off' >/dev/null
check "off: no window any more" "200 200 200 200 200" "$(burst 5 | cut -d' ' -f1 | paste -sd' ')"
check "--help documents --rate-window" "1" "$("$BF_SIM" --help | grep -c -- '--rate-window LEN:N')"
finish
