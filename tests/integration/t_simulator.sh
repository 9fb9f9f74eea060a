#!/usr/bin/env bash
# t_simulator.sh: the protocol behaviour of tools/alpaca-sim, the fake Alpaca
# bars API that every other integration test, the demo and the benchmarks
# rely on. It checks the API contract the simulator documents (its header) as the
# daemon sees it over HTTP: auth, the 400 messages, symbol-first pagination
# that agrees bar for bar with `alpaca-sim dump`, page tokens bound to their
# query, empty shapes, New York midnight stamps, the rate limiter, fault knobs
# (5xx, broken and truncated bodies, requests that hang, responses that stall
# mid-body), gzip, counters, and the HTTP/1.1 framing (pipelining, split
# requests, garbage, oversized heads).
#
# Usage: BF_SIM=path/to/alpaca-sim bash tests/integration/t_simulator.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BF_SIM=${BF_SIM:-$ROOT/build/alpaca-sim}
if [[ ! -x $BF_SIM ]]; then
    echo "t_simulator: no simulator binary at $BF_SIM (set BF_SIM)" >&2
    exit 1
fi

# Resolve the interpreter once: a pyenv shim costs ~0.4 s per start, and the
# walks start Python once per page.
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
tmp=$(mktemp -d)
sim_pids=()
bg_pid="" # a client left waiting on a hung request, while one is
cleanup() {
    local pid
    for pid in $bg_pid "${sim_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
AUTH=(-H 'APCA-API-KEY-ID: test-key' -H 'APCA-API-SECRET-KEY: test-secret')

# fail WHAT EXPECTED GOT: reports the mismatch and the simulators' stderr.
fail() {
    {
        echo "FAIL: $1"
        echo "  expected: $2"
        echo "  got:      $3"
        local f
        for f in "$tmp"/*.err; do
            [[ -s $f ]] && { echo "--- $(basename "$f") ---"; cat "$f"; }
        done
    } >&2
    echo "$passed passed, 1 failed" >&2
    exit 1
}

pass() {
    passed=$((passed + 1))
    echo "ok $passed - $1"
}

expect_eq() {
    [[ "$2" == "$3" ]] || fail "$1" "$2" "$3"
    pass "$1"
}

# start_sim NAME ARGS...: starts a simulator, waits for its port file, sets
# SIM_URL and SIM_PID.
start_sim() {
    local name=$1 i
    shift
    "$BF_SIM" --port 0 --port-file "$tmp/$name.port" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    SIM_PID=$!
    sim_pids+=("$SIM_PID")
    for ((i = 0; i < 100; i++)); do
        [[ -s $tmp/$name.port ]] && break
        kill -0 "$SIM_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ -s $tmp/$name.port ]] ||
        fail "start simulator $name" "a port file within 10 s" "none; stderr: $(cat "$tmp/$name.err")"
    SIM_URL="http://127.0.0.1:$(cat "$tmp/$name.port")"
}

# get URL [CURL ARGS...]: body in $tmp/body, headers in $tmp/hdr, status in
# $status, and in $ms the milliseconds curl took by its own monotonic clock
# (the wall clock may be stepped while a test runs).
get() {
    local url=$1 out secs
    shift
    out=$(curl -s -o "$tmp/body" -D "$tmp/hdr" -w '%{http_code} %{time_total}' "$@" "$url") ||
        fail "GET $url" "a response" "curl exit $?"
    read -r status secs <<<"$out"
    ms=$(awk -v s="${secs/,/.}" 'BEGIN { printf "%d", s * 1000 }')
}

body() { cat "$tmp/body"; }

# header NAME: the value of a response header (last response), or "".
header() {
    tr -d '\r' <"$tmp/hdr" | awk -v n="$(echo "$1" | tr 'A-Z' 'a-z')" -F': ' \
        'tolower($1) == n { v = $2 } END { print v }'
}

# expect_400 WHAT QUERY MESSAGE
expect_400() {
    get "$B/v2/stocks/bars?$2" "${AUTH[@]}"
    expect_eq "$1" "400 {\"message\":$("$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$3")}" \
        "$status $(body)"
}

# page.py BODY CSV SUMMARY: appends a bars body's bars to CSV as `dump` lines
# (numbers kept as their JSON text) and writes "<bars> <symbols> <url-encoded
# token or NULL>" to SUMMARY. Both files are closed before the process exits,
# and the shell reads neither until it has exited: a reader fed by a `< <(...)`
# process substitution returns at the first line, while the writer may still
# hold the CSV half written.
cat >"$tmp/page.py" <<'EOF'
import json, sys, urllib.parse
with open(sys.argv[1]) as f:
    d = json.load(f, parse_float=str, parse_int=str)
bars = d["bars"]
if isinstance(bars, list) or bars is None:
    bars = {d["symbol"]: bars or []}
n = 0
with open(sys.argv[2], "a") as out:
    for sym, rows in bars.items():
        for b in rows:
            out.write(",".join([sym, b["t"], b["o"], b["h"], b["l"], b["c"], b["v"], b["n"], b["vw"]]) + "\n")
            n += 1
tok = d["next_page_token"]
with open(sys.argv[3], "w") as summary:
    summary.write("%d %s %s\n" % (n, ",".join(bars) or "-",
                                  "NULL" if tok is None else urllib.parse.quote(tok, safe="")))
EOF

# walk NAME QUERY [PATH]: follows next_page_token to the end; CSV in
# $tmp/NAME.csv, one summary line per page in $tmp/NAME.pages.
walk() {
    local name=$1 query=$2 path=${3:-/v2/stocks/bars} tok="" pages=0 n syms
    : >"$tmp/$name.csv"
    : >"$tmp/$name.pages"
    while :; do
        pages=$((pages + 1))
        ((pages <= 200)) || fail "walk $name" "a null token within 200 pages" "more"
        get "$B$path?$query${tok:+&page_token=$tok}" "${AUTH[@]}"
        [[ $status == 200 ]] || fail "walk $name page $pages" "200" "$status $(body)"
        "$PYTHON" "$tmp/page.py" "$tmp/body" "$tmp/$name.csv" "$tmp/page.summary" ||
            fail "walk $name page $pages" "a JSON page" "$(head -c 300 "$tmp/body")"
        read -r n syms tok <"$tmp/page.summary"
        echo "$n $syms $tok" >>"$tmp/$name.pages"
        [[ $tok == NULL ]] && break
    done
}

start_sim main --gzip
B=$SIM_URL
MAIN_PID=$SIM_PID
grep -q "^alpaca-sim listening on 127.0.0.1:[0-9]*$" "$tmp/main.out" ||
    fail "start-up line" "alpaca-sim listening on 127.0.0.1:PORT" "$(cat "$tmp/main.out")"
pass "start-up line and port file"

# --- Authentication ---------------------------------------------------------
get "$B/v2/stocks/bars?symbols=AAPL&timeframe=1Hour"
expect_eq "401 without keys" "401" "$status"
expect_eq "401 is nginx HTML" "text/html" "$(header Content-Type)"
printf '<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n<center><h1>401 Authorization Required</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n' >"$tmp/want401"
cmp -s "$tmp/want401" "$tmp/body" || fail "401 body" "$(cat -A "$tmp/want401")" "$(cat -A "$tmp/body")"
pass "401 body verbatim"
get "$B/v2/stocks/bars?symbols=AAPL&timeframe=1Hour" -H 'APCA-API-KEY-ID: test-key' \
    -H 'APCA-API-SECRET-KEY: wrong'
expect_eq "401 with a wrong secret" "401" "$status"

# --- Validation -------------------------------------------------------------
Q="timeframe=1Hour&start=2024-01-02T00:00:00Z&end=2024-01-03T00:00:00Z"
expect_400 "missing symbols" "$Q" \
    "Invalid format for parameter symbols: query parameter 'symbols' is required"
expect_400 "bad timeframe" "symbols=AAPL&timeframe=3Fortnight" "invalid timeframe: 3Fortnight"
expect_400 "missing timeframe" "symbols=AAPL" "invalid timeframe: "
expect_400 "limit 10001" "symbols=AAPL&$Q&limit=10001" "invalid limit: exceeds maximum of 10000"
expect_400 "limit 0" "symbols=AAPL&$Q&limit=0" "invalid limit: must be positive"
expect_400 "malformed symbol fails the whole request" "symbols=AAPL,BAD%24&$Q" "invalid symbol: BAD\$"
expect_400 "bad start" "symbols=AAPL&timeframe=1Hour&start=2024-01-32" \
    "Invalid format for parameter start: error parsing '2024-01-32' as RFC3339 or 2006-01-02 time"
expect_400 "end before start" \
    "symbols=AAPL&timeframe=1Hour&start=2024-02-01T00:00:00Z&end=2024-01-01T00:00:00Z" \
    "end should not be before start"
expect_400 "garbage page_token" "symbols=AAPL&$Q&page_token=bm90LWEtdG9rZW4%3D" "invalid page_token"
expect_400 "bad feed" "symbols=AAPL&$Q&feed=nyse" "invalid feed: nyse"

# --- Pagination agrees with dump ---------------------------------------------
PQ="symbols=MSFT,AAPL&timeframe=1Hour&start=2024-01-01T00:00:00Z&end=2024-03-31T23:59:59Z&limit=500"
walk q1 "$PQ"
"$BF_SIM" dump --symbols MSFT,AAPL --timeframe 1Hour --start 2024-01-01T00:00:00Z \
    --end 2024-03-31T23:59:59Z >"$tmp/dump.csv"
npages=$(wc -l <"$tmp/q1.pages")
((npages >= 3)) || fail "pagination" "at least 3 pages" "$npages"
expect_eq "page 1 holds only AAPL" "500 AAPL" "$(head -1 "$tmp/q1.pages" | cut -d' ' -f1,2)"
expect_eq "no page exceeds limit" "" "$(awk '$1 > 500' "$tmp/q1.pages")"
expect_eq "last token is null" "NULL" "$(tail -1 "$tmp/q1.pages" | cut -d' ' -f3)"
expect_eq "a page straddles AAPL and MSFT" "1" "$(grep -c ' AAPL,MSFT ' "$tmp/q1.pages" || true)"
expect_eq "all pages = dump (line count)" "$(wc -l <"$tmp/dump.csv")" "$(wc -l <"$tmp/q1.csv")"
cmp -s "$tmp/dump.csv" "$tmp/q1.csv" ||
    fail "all pages = dump (content)" "identical" "$(diff "$tmp/dump.csv" "$tmp/q1.csv" | head -5)"
pass "all pages = dump (content)"
# Q1 2024 has 61 trading days (the NYSE closed for MLK Day, Presidents' Day and
# Good Friday) of 16 SIP hours; about 1% of bars are gaps.
nd=$(wc -l <"$tmp/dump.csv")
((nd > 1900 && nd < 1952)) || fail "dump size" "1901..1951 bars (2 × 61 days × 16 h, minus gaps)" "$nd"
pass "dump has the expected size ($nd bars)"

tok=$(head -1 "$tmp/q1.pages" | cut -d' ' -f3)
# A token belongs to the query that produced it, limit included.
expect_400 "token reused with another timeframe" "${PQ/1Hour/2Hour}&page_token=$tok" "invalid page_token"
expect_400 "token reused with another limit" "${PQ/limit=500/limit=10000}&page_token=$tok" \
    "invalid page_token"
expect_400 "token reused without limit (1000)" "${PQ/&limit=500/}&page_token=$tok" "invalid page_token"
expect_400 "token reused with other symbols" "${PQ/MSFT,AAPL/AAPL}&page_token=$tok" "invalid page_token"
expect_400 "token reused with another feed" "$PQ&feed=iex&page_token=$tok" "invalid page_token"
expect_400 "token reused with another adjustment" "$PQ&adjustment=split&page_token=$tok" \
    "invalid page_token"
expect_400 "token reused with another end" "${PQ/23:59:59Z/23:59:58Z}&page_token=$tok" \
    "invalid page_token"
get "$B/v2/stocks/bars?$PQ&page_token=$tok" "${AUTH[@]}"
expect_eq "token with its own query still works" "200 $(sed -n 2p "$tmp/q1.pages" | cut -d' ' -f1)" \
    "$status $("$PYTHON" -c 'import json,sys; print(sum(map(len, json.load(open(sys.argv[1]))["bars"].values())))' "$tmp/body")"
# Symbol order and explicit defaults are the same query.
get "$B/v2/stocks/bars?${PQ/MSFT,AAPL/AAPL,MSFT}&feed=sip&adjustment=raw&sort=asc&page_token=$tok" "${AUTH[@]}"
expect_eq "token with the same query, normalised" "200" "$status"
get "$B/__sim/set?token_binds_limit=0"
get "$B/v2/stocks/bars?${PQ/limit=500/limit=10000}&page_token=$tok" "${AUTH[@]}"
expect_eq "token_binds_limit=0: token survives another limit" "200" "$status"
expect_400 "token_binds_limit=0: other parameters still bind" "${PQ/1Hour/2Hour}&page_token=$tok" \
    "invalid page_token"
get "$B/__sim/set?token_binds_limit=1"

# --- Empty shapes and unknown symbols ---------------------------------------
get "$B/v2/stocks/bars?symbols=ZZNONE,AAPL&$Q" "${AUTH[@]}"
expect_eq "ZZNONE is an absent key" "AAPL" \
    "$("$PYTHON" -c 'import json,sys; print(",".join(json.load(open(sys.argv[1]))["bars"]))' "$tmp/body")"
get "$B/v2/stocks/bars?symbols=ZZNONE&$Q" "${AUTH[@]}"
expect_eq "multi with no data" '{"bars":{},"next_page_token":null}' "$(body)"
get "$B/v2/stocks/ZZNONE/bars?$Q" "${AUTH[@]}"
expect_eq "single with no data" '{"bars":null,"symbol":"ZZNONE","next_page_token":null}' "$(body)"
# Friday 20:00 ET to Monday 03:59 ET: the weekend, outside every session.
get "$B/v2/stocks/AAPL/bars?timeframe=1Hour&start=2024-01-06T01:00:00Z&end=2024-01-08T08:59:59Z" "${AUTH[@]}"
expect_eq "single over a weekend" '{"bars":null,"symbol":"AAPL","next_page_token":null}' "$(body)"
walk single "timeframe=1Hour&start=2024-01-01T00:00:00Z&end=2024-01-31T23:59:59Z&limit=100" \
    /v2/stocks/AAPL/bars
"$BF_SIM" dump --symbols AAPL --timeframe 1Hour --start 2024-01-01T00:00:00Z \
    --end 2024-01-31T23:59:59Z >"$tmp/dump1.csv"
cmp -s "$tmp/dump1.csv" "$tmp/single.csv" ||
    fail "single endpoint pages = dump" "identical" "$(diff "$tmp/dump1.csv" "$tmp/single.csv" | head -5)"
pass "single endpoint pages = dump"

# --- New York midnight stamps -------------------------------------------------
get "$B/v2/stocks/bars?symbols=AAPL&timeframe=1Day&start=2024-01-08&end=2024-01-12" "${AUTH[@]}"
expect_eq "1Day in January (EST)" "05:00:00Z" \
    "$("$PYTHON" -c 'import json,sys; print(" ".join(sorted({b["t"][11:] for b in json.load(open(sys.argv[1]))["bars"]["AAPL"]})))' "$tmp/body")"
get "$B/v2/stocks/bars?symbols=AAPL&timeframe=1Day&start=2024-07-08&end=2024-07-12" "${AUTH[@]}"
expect_eq "1Day in July (EDT)" "04:00:00Z" \
    "$("$PYTHON" -c 'import json,sys; print(" ".join(sorted({b["t"][11:] for b in json.load(open(sys.argv[1]))["bars"]["AAPL"]})))' "$tmp/body")"

# --- gzip ---------------------------------------------------------------------
get "$B/v2/stocks/bars?$PQ" "${AUTH[@]}"
cp "$tmp/body" "$tmp/plain"
expect_eq "no gzip unless asked" "" "$(header Content-Encoding)"
get "$B/v2/stocks/bars?$PQ" "${AUTH[@]}" --compressed
expect_eq "gzip when asked" "gzip" "$(header Content-Encoding)"
cmp -s "$tmp/plain" "$tmp/body" || fail "gzip body" "the plain body" "a different body"
pass "gzip decodes to the same body"

# --- Knobs at run time --------------------------------------------------------
get "$B/__sim/set?fail_rate=1"
expect_eq "set fail_rate" "200 {\"ok\":true}" "$status $(body)"
codes=""
for i in 1 2 3 4 5 6 7 8; do
    get "$B/v2/stocks/bars?symbols=AAPL&$Q" "${AUTH[@]}"
    codes+="$status "
done
[[ $codes =~ ^((500|502|503|504)\ )+$ ]] || fail "fail_rate=1" "only 5xx" "$codes"
pass "fail_rate=1 gives 5xx ($codes)"
get "$B/__sim/set?fail_rate=0&malformed_rate=1"
get "$B/v2/stocks/bars?symbols=AAPL&$Q" "${AUTH[@]}"
"$PYTHON" -c '
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    bad = any(isinstance(b["vw"], str) for rows in d["bars"].values() for b in rows)
except Exception:
    bad = True
sys.exit(0 if bad else 1)' "$tmp/body" || fail "malformed_rate=1" "a broken body" "$(body)"
expect_eq "malformed_rate=1 gives a broken 200" "200" "$status"
# One of the broken kinds is the JSON cut short inside a complete HTTP message:
# curl, which fails (exit 18) on a body shorter than its Content-Length,
# succeeds, and the body is a strict prefix of the good one.
get "$B/__sim/set?malformed_rate=0"
get "$B/v2/stocks/bars?symbols=AAPL&$Q" "${AUTH[@]}"
cp "$tmp/body" "$tmp/good"
get "$B/__sim/set?malformed_rate=1"
cut_seen=""
for i in $(seq 1 30); do
    get "$B/v2/stocks/bars?symbols=AAPL&$Q" "${AUTH[@]}"
    n=$(wc -c <"$tmp/body")
    [[ $status == 200 && $(header Content-Length) == "$n" ]] ||
        fail "malformed body framing" "200 with Content-Length $n" "$status $(header Content-Length)"
    if ((n < $(wc -c <"$tmp/good"))) && cmp -s -n "$n" "$tmp/body" "$tmp/good"; then
        cut_seen="$n of $(wc -c <"$tmp/good") bytes"
        break
    fi
done
[[ -n $cut_seen ]] || fail "malformed_rate=1" "a truncated 200 among 30" "none"
pass "malformed_rate=1 includes JSON cut short with a matching Content-Length ($cut_seen)"
get "$B/__sim/set?malformed_rate=0&trailing_empty=1"
walk te "symbols=AAPL&timeframe=1Day&start=2024-01-01&end=2024-01-31"
expect_eq "trailing empty page" "2|0 - NULL" \
    "$(wc -l <"$tmp/te.pages")|$(tail -1 "$tmp/te.pages")"
get "$B/__sim/set?trailing_empty=0&short_pages=1"
walk short "$PQ"
cmp -s "$tmp/dump.csv" "$tmp/short.csv" || fail "short pages = dump" "identical" "differs"
expect_eq "short pages: more pages, none over limit, same bars" "ok" \
    "$( (($(wc -l <"$tmp/short.pages") > npages)) && [[ -z $(awk '$1 > 500' "$tmp/short.pages") ]] && echo ok)"
get "$B/__sim/set?short_pages=0&latency_ms=300"
get "$B/v2/stocks/bars?symbols=AAPL&$Q" "${AUTH[@]}"
((ms >= 290)) || fail "latency_ms=300" ">= 300 ms" "$ms ms"
pass "latency_ms=300 delays the response ($ms ms)"
# A delay of ten minutes against a budget of 30 s: only an undelayed answer
# can pass, however loaded the machine.
get "$B/__sim/set?latency_ms=600000"
get "$B/__sim/counters" --max-time 30
expect_eq "latency does not delay /__sim/ control requests" "200" "$status"
get "$B/__sim/set?latency_ms=0"
get "$B/__sim/set?bogus=1"
expect_eq "unknown knob" "400" "$status"

# --- Counters -----------------------------------------------------------------
get "$B/__sim/reset"
for i in 1 2 3; do get "$B/v2/stocks/bars?symbols=AAPL&$Q" "${AUTH[@]}"; done
get "$B/v2/stocks/bars?symbols=AAPL&timeframe=1Hour&limit=0" "${AUTH[@]}"
get "$B/v2/stocks/bars?symbols=AAPL&$Q"
get "$B/__sim/counters"
expect_eq "counters" "5 3 1 1 5 3" "$("$PYTHON" -c '
import json, sys
d = json.load(open(sys.argv[1]))
s = d["by_status"]
print(d["requests"], s["200"], s["400"], s["401"], sum(n for _, n in d["per_second"]), d["pages"])' "$tmp/body")"

# --- A dead upstream: hang and stall ---------------------------------------------
# counter NAME: one top-level number from /__sim/counters.
counter() {
    get "$B/__sim/counters"
    "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/body" "$1"
}

# wait_counter NAME VALUE: polls until the counter has the value (20 s budget).
wait_counter() {
    local i got
    for ((i = 0; i < 400; i++)); do
        got=$(counter "$1")
        [[ $got == "$2" ]] && return 0
        sleep 0.05
    done
    fail "counter $1" "$2 within 20 s" "$got"
}

# dead_get URL MAX_TIME [CURL ARGS...]: like get, but a curl failure is the
# result: its exit status in $rc.
dead_get() {
    local url=$1 max=$2
    shift 2
    rc=0
    : >"$tmp/body" # curl -o leaves the file alone when nothing arrives
    : >"$tmp/hdr"
    curl -s -o "$tmp/body" -D "$tmp/hdr" --max-time "$max" "$@" "$url" || rc=$?
}

get "$B/__sim/reset"
get "$B/v2/stocks/AAPL/bars?timeframe=1Day&start=2024-01-01&end=2024-03-31" "${AUTH[@]}"
cp "$tmp/body" "$tmp/good1"
get "$B/__sim/set?hang_rate=1"
expect_eq "set hang_rate" "200 {\"ok\":true}" "$status $(body)"
dead_get "$B/v2/stocks/AAPL/bars?timeframe=1Day&start=2024-01-01&end=2024-03-31" 1 "${AUTH[@]}"
expect_eq "hang_rate=1: curl --max-time 1 times out with nothing received" "28 0 0" \
    "$rc $(wc -c <"$tmp/hdr") $(wc -c <"$tmp/body")"
wait_counter held 0
pass "a hung connection is released when the client gives up"
# A hung request held open in the background: meanwhile /__sim/ answers.
curl -s -o /dev/null --max-time 60 "${AUTH[@]}" "$B/v2/stocks/bars?symbols=AAPL&$Q" &
bg_pid=$!
wait_counter held 1
get "$B/__sim/health" --max-time 10
expect_eq "/__sim/health answers while a request hangs" "200 {\"ok\":true}" "$status $(body)"
expect_eq "the request still hangs" "1" "$(counter held)"
kill "$bg_pid" 2>/dev/null || true
wait "$bg_pid" || true
bg_pid=""
wait_counter held 0
pass "killing the hung client releases its connection"
# What a held connection reads is dropped, not buffered: 8 MB of pipelined
# requests go in (a server that stopped reading would block sendall), none is
# answered, and closing releases the connection.
"$PYTHON" - "${B##*:}" >"$tmp/drain.out" 2>&1 <<'EOF' || fail "hung connection drains" "see below" "$(cat "$tmp/drain.out")"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(30)
req = b"GET /v2/stocks/bars?symbols=AAPL&timeframe=1Day HTTP/1.1\r\nHost: x\r\n\r\n"
s.sendall(req)
s.sendall(req * (8 * 1024 * 1024 // len(req)))
s.settimeout(1)
try:
    got = s.recv(1)
    sys.exit("got %r from a hung connection" % got)
except socket.timeout:
    pass
s.close()
print("drained")
EOF
wait_counter held 0
pass "a hung connection reads and drops 8 MB, answers nothing, is released on close"

get "$B/__sim/set?hang_rate=0&stall_rate=1"
dead_get "$B/v2/stocks/AAPL/bars?timeframe=1Day&start=2024-01-01&end=2024-03-31" 2 "${AUTH[@]}"
clen=$(header Content-Length)
got=$(wc -c <"$tmp/body")
expect_eq "stall_rate=1: 200 and the full Content-Length, then curl times out" \
    "28 200 $(wc -c <"$tmp/good1")" "$rc $(head -1 "$tmp/hdr" | cut -d' ' -f2) $clen"
((got == clen / 2)) && cmp -s -n "$got" "$tmp/body" "$tmp/good1" ||
    fail "stall_rate=1 body" "the first $((clen / 2)) bytes of the good body" "$got bytes"
pass "stall_rate=1: the first half of the body arrives ($got of $clen bytes)"
wait_counter held 0
pass "a stalled connection is released when the client gives up"

get "$B/__sim/set?stall_rate=0"
get "$B/v2/stocks/AAPL/bars?timeframe=1Day&start=2024-01-01&end=2024-03-31" "${AUTH[@]}"
cmp -s "$tmp/body" "$tmp/good1" || fail "back from the dead" "the good body" "$(head -c 200 "$tmp/body")"
pass "hang_rate=0, stall_rate=0: answered in full again"
get "$B/__sim/counters"
expect_eq "counters: hung, stalled, held, and requests = their sum with by_status" "6 3 1 0 2 2 ok" \
    "$("$PYTHON" -c '
import json, sys
d = json.load(open(sys.argv[1]))
s = d["by_status"]
total = sum(s.values()) + d["hung"] + d["stalled"]
print(d["requests"], d["hung"], d["stalled"], d["held"], s["200"], d["pages"],
      "ok" if total == d["requests"] else "sum %d" % total)' "$tmp/body")"

# --- HTTP framing ---------------------------------------------------------------
"$PYTHON" - "${B##*:}" >"$tmp/raw.out" 2>&1 <<'EOF' || fail "HTTP framing" "see below" "$(cat "$tmp/raw.out")"
import socket, sys, time
port = int(sys.argv[1])
K = "APCA-API-KEY-ID: test-key\r\nAPCA-API-SECRET-KEY: test-secret\r\n"
def conn():
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(5); return s
def read_all(s):
    out = b""
    while True:
        d = s.recv(65536)
        if not d: return out
        out += d
def parse(data):
    res = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        hdr = {l.split(b":", 1)[0].lower(): l.split(b":", 1)[1].strip() for l in lines[1:]}
        n = int(hdr[b"content-length"])
        res.append(int(lines[0].split()[1])); data = rest[n:]
    return res
r1 = "GET /v2/stocks/AAPL/bars?timeframe=1Day&start=2024-01-01&end=2024-01-05 HTTP/1.1\r\nHost: x\r\n" + K + "\r\n"
r2 = "GET /__sim/health HTTP/1.1\r\nHost: x\r\n\r\n"
r3 = "GET /v2/stocks/bars?timeframe=1Day HTTP/1.1\r\nHost: x\r\n" + K + "Connection: close\r\n\r\n"
data = (r1 + r2 + r3).encode()
s = conn()
for a, b in ((0, 7), (7, 90), (90, len(data))):  # split inside the request line and headers
    s.sendall(data[a:b]); time.sleep(0.05)
got = parse(read_all(s))  # read_all returning proves the server closed
assert got == [200, 200, 400], got
s = conn(); s.sendall(b"BLAH\r\n\r\n"); got = read_all(s)
assert got.startswith(b"HTTP/1.1 400 "), got[:80]
s = conn(); s.sendall(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"); got = read_all(s)
assert got.startswith(b"HTTP/1.1 431 "), got[:80]
print("framing ok")
EOF
pass "pipelined, split, Connection: close"
pass "garbage → 400 and close; 20 KB request line → 431 and close"

# --- Rate limit and the free plan (a second instance) ---------------------------
# A bucket of 5 refilling once every 20 s: 30 requests on one keep-alive
# connection get exactly 5 answers unless they take 20 s, so the counts below
# do not depend on how fast a loaded machine sends them.
start_sim limited --rate 0.05 --burst 5 --free-plan
L=$SIM_URL
L_PID=$SIM_PID
urls=()
for i in $(seq 1 30); do urls+=(-o /dev/null "$L/v2/stocks/bars?symbols=AAPL&$Q"); done
curl -s "${AUTH[@]}" -D "$tmp/rl.hdr" "${urls[@]}"
tr -d '\r' <"$tmp/rl.hdr" >"$tmp/rl.txt"
n429=$(grep -c '^HTTP/1.1 429' "$tmp/rl.txt" || true)
n200=$(grep -c '^HTTP/1.1 200' "$tmp/rl.txt" || true)
((n200 == 5 && n429 == 25)) || fail "rate 0.05/s, burst 5, 30 requests" "5 × 200, 25 × 429" "$n200 200s, $n429 429s"
pass "rate limit: $n200 × 200, $n429 × 429"
awk '/^HTTP/ { s = $2 } tolower($0) ~ /^(x-ratelimit|retry-after)/ && s == 429 { bad = 1 } END { exit bad }' \
    "$tmp/rl.txt" || fail "429 headers" "no X-RateLimit-*, no Retry-After" "$(grep -i ratelimit "$tmp/rl.txt" | head -3)"
pass "429 carries no rate-limit headers"
expect_eq "200 carries X-RateLimit-Limit (requests a minute)" "3" \
    "$(awk '/^HTTP/ { s = $2 } s == 200 && /^X-RateLimit-Limit:/ { print $2; exit }' "$tmp/rl.txt")"
# A nearly frozen bucket holding one token makes the next two answers certain.
get "$L/__sim/set?rate=0.01&burst=1"
get "$L/v2/stocks/bars?symbols=AAPL&$Q" "${AUTH[@]}"
expect_eq "200 rate-limit headers" "200 1 0" \
    "$status $(header X-RateLimit-Limit) $(header X-RateLimit-Remaining)"
reset=$(header X-RateLimit-Reset)
now=$(date +%s)
((reset > now && reset <= now + 101)) || fail "X-RateLimit-Reset" "epoch seconds within 100 s" "$reset (now $now)"
pass "X-RateLimit-Reset is a near-future epoch second"
get "$L/v2/stocks/bars?symbols=AAPL&$Q" "${AUTH[@]}"
expect_eq "429 body verbatim" '429 {"message": "too many requests."}' "$status $(body)"
get "$L/__sim/set?rate=0"
# An explicit start: the default one is today's UTC midnight, which passes
# `end` when the clock turns midnight between this line and the request.
now=$(date +%s)
recent="start=$(date -u -d "@$((now - 3600))" +%Y-%m-%dT%H:%M:%SZ)&end=$(date -u -d "@$now" +%Y-%m-%dT%H:%M:%SZ)"
get "$L/v2/stocks/bars?symbols=AAPL&timeframe=1Min&$recent" "${AUTH[@]}"
expect_eq "free plan: recent SIP is 403" \
    '403 {"message":"subscription does not permit querying recent SIP data"}' "$status $(body)"
get "$L/v2/stocks/bars?symbols=AAPL&timeframe=1Min&$recent&feed=iex" "${AUTH[@]}"
expect_eq "free plan: recent IEX is fine" "200" "$status"

# --- Dead from the start (a third instance) ----------------------------------------
start_sim dead --hang-rate 1 --token-ignores-limit
D_PID=$SIM_PID
dead_get "$SIM_URL/v2/stocks/bars?symbols=AAPL&$Q" 1 "${AUTH[@]}"
get "$SIM_URL/__sim/counters"
expect_eq "--hang-rate 1: a timeout, counted as hung" "28 1" \
    "$rc $("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["hung"])' "$tmp/body")"
get "$SIM_URL/__sim/set?hang_rate=0"
get "$SIM_URL/v2/stocks/bars?${PQ/limit=500/limit=10}" "${AUTH[@]}"
tok=$("$PYTHON" -c 'import json,sys,urllib.parse; print(urllib.parse.quote(json.load(open(sys.argv[1]))["next_page_token"], safe=""))' "$tmp/body")
get "$SIM_URL/v2/stocks/bars?${PQ/limit=500/limit=20}&page_token=$tok" "${AUTH[@]}"
expect_eq "--token-ignores-limit: a token survives another limit" "200" "$status"

# --- Clean shutdown ---------------------------------------------------------------
# The main instance goes down holding a hung connection and a stalled one
# whose half body still waits on the latency timer: both must be freed.
get "$B/__sim/set?hang_rate=1"
curl -s -o /dev/null --max-time 60 "${AUTH[@]}" "$B/v2/stocks/bars?symbols=AAPL&$Q" &
bg_pid=$!
wait_counter held 1
get "$B/__sim/set?hang_rate=0&stall_rate=1&latency_ms=60000"
curl -s -o /dev/null --max-time 60 "${AUTH[@]}" "$B/v2/stocks/bars?symbols=AAPL&$Q" &
bg_pid+=" $!"
wait_counter held 2
for np in "main:$MAIN_PID" "limited:$L_PID" "dead:$D_PID"; do
    name=${np%%:*} pid=${np#*:}
    kill -TERM "$pid"
    rc=0
    wait "$pid" || rc=$?
    expect_eq "$name: SIGTERM, exit 0, no sanitizer report" "0 " \
        "$rc $(grep -l 'ERROR: \(Leak\|Address\|UndefinedBehavior\)Sanitizer\|runtime error' "$tmp/$name.err" || true)"
done
sim_pids=() # all reaped: their PIDs may be someone else's by exit time
# The server's close ends both clients at once.
for pid in $bg_pid; do wait "$pid" || true; done
bg_pid=""

echo "$passed passed, 0 failed"
