#!/usr/bin/env bash
# The main job end to end: 50 symbols x one year of h1 through the real
# daemon, the simulator and a private Postgres. Every bar must equal what the
# simulator served, every run must succeed, and a second, forced backfill of
# the same range must write no new row versions.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start
bf migrate >"$T/migrate.out"
check "migrate prints the version" "schema at version $SCHEMA_LATEST ($SCHEMA_LATEST migrations applied)" "$(cat "$T/migrate.out")"
check "migrate again applies nothing" "schema at version $SCHEMA_LATEST (0 migrations applied)" "$(bf migrate)"

bf enqueue --symbols "$SYMBOLS50" --timeframe h1 --from 2024-01-01 --to 2024-12-31 >"$T/enqueue.out"
check "600 monthly runs queued" "600" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'queued'")"
check "enqueue again queues nothing" "0" \
    "$(bf enqueue --symbols "$SYMBOLS50" --timeframe h1 --from 2024-01-01 --to 2024-12-31 | sed -E 's/queued ([0-9]+) .*/\1/')"

export BACKFILLD_PAGE_LIMIT=10000 BACKFILLD_RATE_LIMIT=600000 BACKFILLD_PROGRESS_INTERVAL_MS=1000
daemon_start d1 --until-idle
daemon_wait "$DAEMON_PID" 180
check "daemon exits 0 when idle" "0" "$DAEMON_RC"
check "every run succeeded" "600|0" "$(sql "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status <> 'succeeded') FROM job_runs")"

load_expected h1 --symbols "$SYMBOLS50" --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-12-31)"
expected=$(sql "SELECT count(*) FROM expected_bars")
[ "$expected" -gt 150000 ] || fail "simulator dump is implausibly small: $expected"
check_bars_exact
check "bars_written adds up" "$expected" "$(sql "SELECT sum(bars_written) FROM job_runs")"
check "all 50 symbols present" "50" "$(sql "SELECT count(DISTINCT symbol) FROM bars")"
# status right after the daemon stopped: coverage includes the last completions,
# which no scheduler pass has folded in yet.
check "status: AAPL covered from New York's Jan 1 to New York's next Jan 1" \
    "$(sql "SELECT to_char('$(ny 2024-01-01)'::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || '|'
                   || to_char('$(ny 2025-01-01)'::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')")" \
    "$(bf status --json --limit 100 | python3 -c '
import json, sys
from datetime import datetime, timezone
d = [x for x in json.load(sys.stdin)["definitions"] if x["symbol"] == "AAPL"][0]
f = lambda s: datetime.fromisoformat(s).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")
print(f(d["covered_from"]), f(d["covered_until"]), sep="|")')"
check "every run started and finished once" "600" "$(sql "SELECT count(*) FROM job_runs WHERE attempt = 1 AND finished_at IS NOT NULL AND locked_by IS NULL")"
grep -q '"msg":"run succeeded"' "$T/d1.log" || fail "no 'run succeeded' log line"
grep -q '"msg":"progress"' "$T/d1.log" || fail "no progress log line"
# The ETA is unknown (-1) until a few runs have finished, then measured over the time they
# took: never the "10 hours" that one early run over a whole minute would imply.
etas=$(grep '"msg":"progress"' "$T/d1.log" | grep -o '"eta_s":-\?[0-9]*' | cut -d: -f2 | paste -sd' ')
log "progress ETAs (s): $etas"
check "progress ETAs are unknown or plausible for a backfill of seconds" "" \
    "$(for e in $etas; do [ "$e" -eq -1 ] || [ "$e" -le 600 ] || echo "$e"; done)"

# The same backfill again, forced: identical data must not create row versions.
before=$(sql "SELECT md5(string_agg(ctid::text || ':' || xmin::text, ',' ORDER BY symbol, ts)) FROM bars")
bf enqueue --symbols "$SYMBOLS50" --timeframe h1 --from 2024-01-01 --to 2024-12-31 --force >/dev/null
check "forced enqueue queues 600 again" "600" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'queued'")"
daemon_start d2 --until-idle
daemon_wait "$DAEMON_PID" 180
check "second daemon exits 0" "0" "$DAEMON_RC"
check "second pass succeeded" "1200" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
after=$(sql "SELECT md5(string_agg(ctid::text || ':' || xmin::text, ',' ORDER BY symbol, ts)) FROM bars")
check "no new row versions (ctid, xmin unchanged)" "$before" "$after"
check "still exact" "0" "$(bars_diff)"
finish
