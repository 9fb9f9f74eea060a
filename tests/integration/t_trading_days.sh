#!/usr/bin/env bash
# A bare date is the New York trading day. A backfill of one day stores
# exactly the simulator's New York session of that day: the day's after-hours
# bars that fall on the next UTC date are in, the previous day's are out.
# Across both DST changes, an early close and a year end, every chunk starts
# and ends at a New York midnight, and daily bars (stamped at New York
# midnight) land in the chunk of their trading day.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start
bf migrate >/dev/null
export BACKFILLD_RATE_LIMIT=600000

# ny_runs: the runs' ranges as UTC text, oldest first.
ny_runs() {
    sql "SELECT string_agg(to_char(range_start AT TIME ZONE 'UTC', 'MM-DD HH24:MI') || '/'
                           || to_char(range_end AT TIME ZONE 'UTC', 'MM-DD HH24:MI'), ' '
                           ORDER BY range_start) FROM job_runs WHERE timeframe = '$1'"
}
# backfill NAME: one daemon until idle; every run must succeed.
backfill() {
    daemon_start "$1" --until-idle
    daemon_wait "$DAEMON_PID" 120
    check "$1: daemon exits 0" "0" "$DAEMON_RC"
    check "$1: every run succeeded" "0" "$(sql "SELECT count(*) FROM job_runs WHERE status <> 'succeeded'")"
}

# --- the reproduction: Dec 31, 2024 (EST), m1 --------------------------------
bf enqueue --symbols AAPL --timeframe m1 --from 2024-12-31 --to 2024-12-31 >"$T/enqueue.out"
check "one run, New York midnight to New York midnight" "12-31 05:00/01-01 05:00" "$(ny_runs m1)"
backfill d1
load_expected m1 --symbols AAPL --timeframe 1Min --start "$(ny 2024-12-31)" --end "$(ny_end 2024-12-31)"
check_bars_exact "Dec 31 session"
check "the session runs 04:00-20:00 ET: 09:00Z to 00:59Z the next UTC day" \
    "2024-12-31 09:00|2025-01-01 00:59" \
    "$(sql "SELECT to_char(min(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || '|'
                   || to_char(max(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM expected_bars")"
check "its after-hours bars past UTC midnight are stored" \
    "$(sql "SELECT count(*) FROM expected_bars WHERE ts >= '2025-01-01 00:00Z'")" \
    "$(sql "SELECT count(*) FROM bars WHERE ts >= '2025-01-01 00:00Z'")"
check "and none of Dec 30's" "0" "$(sql "SELECT count(*) FROM bars WHERE ts < '2024-12-31 05:00Z'")"

# --- both DST changes: Fri-Mon around Sun Mar 10 and Sun Nov 3, 2024 ----------
sql "DELETE FROM bars; DELETE FROM job_runs; DELETE FROM job_definitions" >/dev/null
bf enqueue --symbols AAPL,MSFT --timeframe m1 --from 2024-03-08 --to 2024-03-11 >/dev/null
check "spring forward: weekly chunks cut at Monday New York midnight (04:00Z in EDT)" \
    "03-08 05:00/03-11 04:00 03-08 05:00/03-11 04:00 03-11 04:00/03-12 04:00 03-11 04:00/03-12 04:00" \
    "$(ny_runs m1)"
backfill d2
load_expected m1 --symbols AAPL,MSFT --timeframe 1Min --start "$(ny 2024-03-08)" --end "$(ny_end 2024-03-11)"
check_bars_exact "around the spring change"
check "Monday's session opens 04:00 EDT = 08:00Z" "08:00" \
    "$(sql "SELECT to_char(min(ts) AT TIME ZONE 'UTC', 'HH24:MI') FROM expected_bars WHERE ts >= '2024-03-11 04:00Z'")"

sql "DELETE FROM bars; DELETE FROM job_runs; DELETE FROM job_definitions" >/dev/null
bf enqueue --symbols AAPL --timeframe m1 --from 2024-11-01 --to 2024-11-04 >/dev/null
check "fall back: the chunk boundary is Monday 00:00 EST = 05:00Z" \
    "11-01 04:00/11-04 05:00 11-04 05:00/11-05 05:00" "$(ny_runs m1)"
backfill d3
load_expected m1 --symbols AAPL --timeframe 1Min --start "$(ny 2024-11-01)" --end "$(ny_end 2024-11-04)"
check_bars_exact "around the fall change"
check "Friday's session opens 04:00 EDT = 08:00Z, Monday's 04:00 EST = 09:00Z" "08:00|09:00" \
    "$(sql "SELECT to_char(min(ts) FILTER (WHERE ts < '2024-11-02Z') AT TIME ZONE 'UTC', 'HH24:MI') || '|'
                   || to_char(min(ts) FILTER (WHERE ts >= '2024-11-04 05:00Z') AT TIME ZONE 'UTC', 'HH24:MI')
              FROM bars")"

# --- an early close: the day after Thanksgiving ------------------------------
sql "DELETE FROM bars; DELETE FROM job_runs; DELETE FROM job_definitions" >/dev/null
bf enqueue --symbols AAPL --timeframe m1 --from 2024-11-29 --to 2024-11-29 >/dev/null
backfill d4
load_expected m1 --symbols AAPL --timeframe 1Min --start "$(ny 2024-11-29)" --end "$(ny_end 2024-11-29)"
check_bars_exact "early-close day"
check "the early close's extended session ends 17:00 ET (22:00Z)" "t" \
    "$(sql "SELECT max(ts) < '2024-11-29 22:00Z' AND max(ts) >= '2024-11-29 21:00Z' FROM bars")"

# --- daily bars across a year end and both DST changes -------------------------
sql "DELETE FROM bars; DELETE FROM job_runs; DELETE FROM job_definitions" >/dev/null
bf enqueue --symbols AAPL --timeframe d1 --from 2024-01-01 --to 2025-01-03 >/dev/null
check "yearly d1 chunks cut at New York's Jan 1" "01-01 05:00/01-01 05:00 01-01 05:00/01-04 05:00" \
    "$(ny_runs d1)"
backfill d5
load_expected d1 --symbols AAPL --timeframe 1Day --start "$(ny 2024-01-01)" --end "$(ny_end 2025-01-03)"
check_bars_exact "a year of d1"
check "Dec 31's bar (05:00Z) is in 2024's chunk, Jan 2-3 in 2025's" "$(($(sql "SELECT count(*) FROM expected_bars") - 2))|2" \
    "$(sql "SELECT string_agg(bars_written::text, '|' ORDER BY range_start) FROM job_runs")"
check "daily bars are stamped at New York midnight in EST and EDT alike" "0" \
    "$(sql "SELECT count(*) FROM bars WHERE (ts AT TIME ZONE 'America/New_York')::time <> '00:00'")"
check "both offsets occur" "04:00|05:00" \
    "$(sql "SELECT string_agg(DISTINCT to_char(ts AT TIME ZONE 'UTC', 'HH24:MI'), '|') FROM bars")"
finish
