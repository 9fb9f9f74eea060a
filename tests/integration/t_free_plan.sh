#!/usr/bin/env bash
# The free plan's default no longer fails for good. With the defaults (feed
# sip, no --to, BACKFILLD_SIP_REALTIME=false) the last chunk used to ask for
# SIP up to now and end `failed` on 403 "subscription does not permit
# querying recent SIP data". Now no request asks for SIP younger than 15
# minutes; a run made by hand that does still fails, with a message naming
# the setting.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start --free-plan
bf migrate >/dev/null
export BACKFILLD_RATE_LIMIT=600000

FROM=$(date -u -d '-2 hours' +%Y-%m-%dT%H:%M:00Z)
bf enqueue --symbols XXE,XXF --timeframe m1 --from "$FROM" >/dev/null
daemon_start d1 --until-idle
daemon_wait "$DAEMON_PID" 120
check "daemon exits 0" "0" "$DAEMON_RC"
check "every run succeeded" "0" "$(sql "SELECT count(*) FROM job_runs WHERE status <> 'succeeded'")"
check "the simulator answered no 403" "0" "$(sim_counter 'c["by_status"].get("403", 0)')"
check "no bar younger than 15 minutes was asked for" "t" \
    "$(sql "SELECT max(ts) < now() - interval '15 minutes' AND max(range_end) <= now() - interval '15 minutes' FROM bars, job_runs")"
END=$(sql "SELECT to_char(max(range_end) AT TIME ZONE 'UTC' - interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM job_runs")
load_expected m1 --symbols XXE,XXF --timeframe 1Min --start "$FROM" --end "$END"
check_bars_exact

# A run reaching into the last 15 minutes, queued by hand: refused, and said why.
sql "SELECT enqueue_range(id, now() - interval '10 minutes', now(), true, 1) FROM job_definitions WHERE symbol = 'XXE'" >/dev/null
daemon_start d2 --until-idle
daemon_wait "$DAEMON_PID" 120
check "the hand-made run failed" "failed" "$(sql "SELECT status FROM job_runs WHERE range_end > now() - interval '15 minutes'")"
check "its error names the cause and the setting" "1" \
    "$(sql "SELECT count(*) FROM job_runs WHERE last_error LIKE '%subscription does not permit%' AND last_error LIKE '%BACKFILLD_SIP_REALTIME%'")"
grep -q 'BACKFILLD_SIP_REALTIME' "$T/d2.log" || fail "the daemon's log does not name the setting"
finish
