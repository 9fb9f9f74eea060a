#!/usr/bin/env bash
# verify on a year of h1 for N symbols (issue #14: "verify finishes in
# seconds on a year of h1 for 500 symbols"). Backfills 2024 of h1 for N
# symbols (default 500, ~2M bars) against the simulator, then times, each
# ROUNDS times (default 3):
#   verify --no-check   the ledger alone (calendar, coverage, bars per day)
#   verify              the same plus the re-check of the days short of their
#                       session (the simulator leaves about one bar in 97 out,
#                       as if nothing traded, so ~15% of h1 days are short):
#                       one multi-symbol request per day and 100 symbols
# and prints the series-days, the re-checked days, the requests and the
# seconds of each, median and worst. The backfill is first checked against
# `alpaca-sim dump` over the New York days of 2024 (schema 6); exit 1 if it
# is not exact.
#
# Usage: bench/verify.sh [N] [ROUNDS]     (BF_BIN, BF_SIM: the binaries to use)
. "$(dirname "$0")/lib.sh"

N=${1:-500}
ROUNDS=${2:-3}
snapshot_binaries
pg_start
sim_start
export APCA_API_BASE_URL=$APCA_API_DATA_URL BACKFILLD_RATE_LIMIT=1000000 BACKFILLD_UPKEEP_INTERVAL_MS=0
bf migrate >/dev/null
bench_symbols "$N" "$T/symbols.txt"
bf enqueue --symbols-file "$T/symbols.txt" --timeframe h1 --from 2024-01-01 --to 2024-12-31 >/dev/null
t0=$(now_s)
daemon_start backfill --until-idle
daemon_wait "$DAEMON_PID" 1800
[ "$DAEMON_RC" -eq 0 ] || fail "the backfill failed"
bars=$(sql "SELECT count(*) FROM bars")
# Exact before timing verify: the simulator's bars over the New York days of
# 2024 (schema 6), every column both ways, SIP, raw, final, fetched_at.
bench_dump "$T/expected.csv" 1Hour "$(paste -sd, "$T/symbols.txt")" 2024-01-01 2024-12-31
bench_load_expected "$T/expected.csv" h1
read -r miss extra off <<<"$(bench_bars_diff)"
[ "$miss$extra$off" = 000 ] || fail "the backfill is not exact: $miss bars missing, $extra extra, $off not sip/raw/final"
sql "DROP TABLE expected_bars"
log "backfilled $N symbols x 2024 h1: $bars bars in $(awk -v a="$t0" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }') s"
sql "VACUUM ANALYZE bars" # what autovacuum does soon after a backfill: index-only scans

# round MODE ARGS...: one timed verify; prints "seconds days checked requests".
round() {
    local s e
    s=$(now_s)
    "$BF_BIN" verify --json "$@" >"$T/v.json" 2>"$T/v.err" || [ $? -eq 1 ] || fail "verify $*: $(cat "$T/v.err")"
    e=$(now_s)
    python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))["totals"]
print("%.2f %d %d %d %d" % (float(sys.argv[3]) - float(sys.argv[2]), t["days"], t["complete"], t["checked"], t["requests"]))' \
        "$T/v.json" "$s" "$e"
}
summary() { # LABEL FILE
    sort -n "$2" | awk -v l="$1" '{ s[NR] = $1; d = $2; c = $3; k = $4; r = $5 }
        END { printf "%-28s %9d %9d %9d %8d   %6.2f %6.2f\n", l, d, c, k, r, s[int((NR + 1) / 2)], s[NR] }'
}
: >"$T/nocheck.txt"
: >"$T/check.txt"
for ((i = 1; i <= ROUNDS; i++)); do
    round --no-check >>"$T/nocheck.txt"
    round >>"$T/check.txt"
done
echo
echo "verify, $N symbols x 2024 h1 ($bars bars), $ROUNDS rounds, $(nproc) cores; binaries of $BF_BUILT"
printf "%-28s %9s %9s %9s %8s   %6s %6s\n" "" "days" "complete" "checked" "requests" "median" "worst"
summary "verify --no-check" "$T/nocheck.txt"
summary "verify (re-check)" "$T/check.txt"
