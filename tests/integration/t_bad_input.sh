#!/usr/bin/env bash
# Bad input gets a clear answer and changes nothing: configuration errors exit
# 78 naming the key; bad enqueue arguments exit 65 (or 64) with nothing
# queued; a body that is malformed every time fails the run, with the parse
# error stored, once its attempts are spent; an unreachable database is
# retried (and logged) until it comes up, then work proceeds.
. "$(dirname "$0")/lib.sh"

expect_exit() { # expect_exit CODE PATTERN command...
    local code=$1 pat=$2 rc=0
    shift 2
    "$@" >"$T/out" 2>&1 || rc=$?
    check "exit $code: $*" "$code" "$rc"
    grep -q -- "$pat" "$T/out" || fail "output of '$*' lacks '$pat': $(cat "$T/out")"
}

expect_exit 78 "BACKFILLD_CONCURRENCY" env BACKFILLD_CONCURRENCY=0 "$BF_BIN" status
expect_exit 78 "unknown key" env BACKFILLD_CONCURENCY=4 "$BF_BIN" status
printf 'BACKFILLD_POLL_INTERVAL_MS=fast\n' >"$T/bad.env"
expect_exit 78 "BACKFILLD_POLL_INTERVAL_MS" "$BF_BIN" --config "$T/bad.env" status
expect_exit 78 "APCA_API_KEY_ID" env -u APCA_API_KEY_ID "$BF_BIN" run
expect_exit 64 "unknown command" "$BF_BIN" frobnicate
expect_exit 0 "usage: backfilld" "$BF_BIN" --help
expect_exit 0 "enqueue --symbols" "$BF_BIN" enqueue --help

pg_start
bf migrate >/dev/null
expect_exit 65 "unknown timeframe 'h2'" "$BF_BIN" enqueue --symbols AAPL --timeframe h2 --from 2024-01-01 --to 2024-02-01
expect_exit 65 "inverted" "$BF_BIN" enqueue --symbols AAPL --timeframe h1 --from 2024-02-01 --to 2024-01-01
expect_exit 65 "upper case" "$BF_BIN" enqueue --symbols aapl --timeframe h1 --from 2024-01-01 --to 2024-02-01
expect_exit 65 "not a date" "$BF_BIN" enqueue --symbols AAPL --timeframe h1 --from yesterday
expect_exit 64 "required" "$BF_BIN" enqueue --timeframe h1 --from 2024-01-01
check "nothing was queued or defined" "0|0" "$(sql "SELECT (SELECT count(*) FROM job_runs), (SELECT count(*) FROM job_definitions)")"

# A page that is malformed every time: retried, then the run fails with the parse error.
sim_start --malformed-rate 1
bf enqueue --symbols AAPL --timeframe d1 --from 2024-01-01 --to 2024-12-31 --max-attempts 2 >/dev/null
BACKFILLD_RATE_LIMIT=600000 BACKFILLD_RETRY_BASE_MS=5 BACKFILLD_RETRY_MAX_MS=20 \
    BACKFILLD_PAGE_RETRIES=2 BACKFILLD_RUN_RETRY_BASE_MS=50 daemon_start d1 --until-idle
daemon_wait "$DAEMON_PID" 60
check "daemon exits 0" "0" "$DAEMON_RC"
check "the run failed after 2 attempts" "failed|2" "$(sql "SELECT status, attempt FROM job_runs")"
grep -q "malformed response" <<<"$(sql "SELECT last_error FROM job_runs")" || fail "last_error lacks the parse error: $(sql "SELECT last_error FROM job_runs")"
check "each attempt is in the history" "2" "$(sql "SELECT jsonb_array_length(errors) FROM job_runs")"
check "nothing half-written" "0" "$(sql "SELECT count(*) FROM bars")"
grep -q '"msg":"run attempt failed, will retry"' "$T/d1.log" || fail "no retry line"

# Database down at start: the daemon retries with backoff, says so, and recovers.
pg_stop
BACKFILLD_RATE_LIMIT=600000 daemon_start d2
wait_for "two logged connection retries" 30 count_ge "$T/d2.log" '"msg":"db connect failed","conn":"main"' 2
kill -0 "$DAEMON_PID" || fail "the daemon died while the database was down"
grep -m1 '"msg":"db connect failed"' "$T/d2.log" | grep -q '"retry_in_ms":' || fail "retry delay not logged"
pg_restart_only
wait_for "ready after the database came back" 60 grep -q '"msg":"ready"' "$T/d2.log"
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 30
check "SIGTERM exits 0" "0" "$DAEMON_RC"
finish
