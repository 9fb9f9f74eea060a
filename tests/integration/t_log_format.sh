#!/usr/bin/env bash
# BACKFILLD_LOG_FORMAT: auto (the default) writes JSON when stderr is a file
# and text when it is a terminal (driven in tmux), coloured unless NO_COLOR,
# and JSON again when that terminal is the journal's stream; text keeps every
# field; a wrong value is a configuration error naming the key.
. "$(dirname "$0")/lib.sh"

tmux_start

pg_start
sim_start
bf migrate >/dev/null
export BACKFILLD_RATE_LIMIT=600000
unset BACKFILLD_LOG_FORMAT NO_COLOR JOURNAL_STREAM

# one_backfill NAME [env...]: AAPL's 2024 of d1 (again) by a daemon that runs until idle,
# its stderr in $T/NAME.log.
one_backfill() {
    local name=$1
    shift
    bf enqueue --symbols AAPL --timeframe d1 --from 2024-01-01 --to 2024-12-31 --force >/dev/null
    env "$@" "$BF_BIN" run --until-idle 2>"$T/$name.log" &
    DAEMON_PID=$!
    PIDS+=($DAEMON_PID)
    daemon_wait "$DAEMON_PID" 60
    check "$name: the daemon exits 0" "0" "$DAEMON_RC"
}
last_run() { sql "SELECT id || ' ' || bars_written FROM job_runs ORDER BY id DESC LIMIT 1"; }

# auto, stderr a file: JSON, every line of it.
one_backfill auto
check_cmd "auto into a file: every line is a JSON object" python3 -c '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines, "no lines"
for l in lines:
    json.loads(l)
' "$T/auto.log"
read -r id bars < <(last_run)
check_cmd "auto into a file: the run's line is JSON with its fields" \
    grep -qE "^\{\"ts\":\"[^\"]+\",\"level\":\"info\",\"msg\":\"run succeeded\",\"job_id\":$id,\"symbol\":\"AAPL\",\"timeframe\":\"d1\",\"attempt\":1,\"bars\":$bars," "$T/auto.log"

# json, said outright: the same.
one_backfill json BACKFILLD_LOG_FORMAT=json
check "json: no line is anything but JSON" "0" "$(grep -cv '^{"ts":' "$T/json.log" || true)"

# text into a file: text, as asked, but no colour there.
one_backfill text BACKFILLD_LOG_FORMAT=text
read -r id bars < <(last_run)
text_re="^[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3} (debug|info |notice|warn |error|crit ) [a-z]"
check "text: every line is a text line" "$(wc -l <"$T/text.log")" "$(grep -cE "$text_re" "$T/text.log")"
check_cmd "text: the run's line keeps every field" \
    grep -qE "^[0-9:.]{12} info  run succeeded job_id=$id symbol=AAPL timeframe=d1 attempt=1 bars=$bars pages=1 request_symbols=1 ms=[0-9]+$" "$T/text.log"
check_cmd "text: the start line names the worker and the URL" \
    grep -qE "^[0-9:.]{12} info  starting worker=[^ ]+ data_url=$APCA_API_DATA_URL " "$T/text.log"
check "text into a file: no escape codes" "0" "$(grep -c $'\033' "$T/text.log" || true)"
check "text: no JSON line" "0" "$(grep -c '^{' "$T/text.log" || true)"

# On a terminal. A daemon in a tmux pane with its stderr on the pane; its
# exit status goes to $T/NAME.rc, and the pane then stays open.
on_tty() {
    local name=$1 prefix=$2
    bf enqueue --symbols AAPL --timeframe d1 --from 2024-01-01 --to 2024-12-31 --force >/dev/null
    "${TM[@]}" new-session -d -s "$name" -x 250 -y 50 \
        "$prefix '$BF_BIN' run --until-idle; echo \$? >'$T/$name.rc'; exec sleep 3600"
    wait_for "$name: the daemon exits" 60 test -s "$T/$name.rc"
    check "$name: the daemon exits 0" "0" "$(cat "$T/$name.rc")"
    # -e keeps the escape codes, -J joins wrapped lines, -S - takes the scrollback too.
    "${TM[@]}" capture-pane -p -e -J -S - -t "$name" >"$T/$name.screen"
    sed -E 's/\x1b\[[0-9;]*m//g' "$T/$name.screen" >"$T/$name.plain"
}
on_tty tty ""
read -r id bars < <(last_run)
check_cmd "auto on a terminal: text, every field" \
    grep -qE "^[0-9:.]{12} info  run succeeded job_id=$id symbol=AAPL timeframe=d1 attempt=1 bars=$bars pages=1 " "$T/tty.plain"
check_cmd "auto on a terminal: the level in colour" grep -q $'\033\\[32minfo' "$T/tty.screen"
check_cmd "auto on a terminal: the keys dimmed" grep -q $'\033\\[2mjob_id=' "$T/tty.screen"
check "auto on a terminal: no JSON" "0" "$(grep -c '{"ts":' "$T/tty.screen" || true)"

on_tty nocolor "NO_COLOR=1"
check_cmd "NO_COLOR: still text" grep -qE "^[0-9:.]{12} info  run succeeded job_id=[0-9]+ symbol=AAPL " "$T/nocolor.screen"
check "NO_COLOR: no colour" "0" "$(grep -c $'\033\\[3' "$T/nocolor.screen" || true)"

# A terminal that is the journal's stream (JOURNAL_STREAM names it): JSON with priorities.
on_tty journal 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) '
check_cmd "auto into the journal: JSON with a priority prefix" \
    grep -qE '^<6>\{"ts":"[^"]+","level":"info","msg":"run succeeded","job_id":[0-9]+,"symbol":"AAPL"' "$T/journal.screen"
check "auto into the journal: no text line" "0" "$(grep -cE "$text_re" "$T/journal.screen" || true)"

# A wrong value: exit 78, the message names the key; --help-config lists it.
rc=0
BACKFILLD_LOG_FORMAT=xml "$BF_BIN" run --until-idle 2>"$T/bad.err" || rc=$?
check "a wrong value is a configuration error" "78" "$rc"
check "the message names the key and the choices" \
    'backfilld: configuration error: BACKFILLD_LOG_FORMAT: must be json, text or auto, got "xml"' "$(cat "$T/bad.err")"
check_cmd "--help-config lists it with its default" \
    grep -qE '^BACKFILLD_LOG_FORMAT +auto +restart ' <<<"$("$BF_BIN" --help-config)"
finish
