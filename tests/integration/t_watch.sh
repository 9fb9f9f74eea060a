#!/usr/bin/env bash
# The terminal views, driven in tmux as a person would see them: `status
# --watch` and `enqueue --wait` in detached sessions against a running
# backfill, their screens read with capture-pane. The bars must advance and
# never wrap, the counts on the final screens must be the tables', the final
# screens must say done, Ctrl-C must end both cleanly (the cursor shown
# again; --wait exits 130 and leaves its runs queued). Without a terminal each
# prints plain lines, and --wait exits 1 and lists a run that failed.
. "$(dirname "$0")/lib.sh"

tmux_start

pg_start
sim_start --latency-ms 20
bf migrate >/dev/null
# 50 symbols x 2024 of h1 is 600 runs in 24 requests (12 months, 2 pages each):
# at 2 requests/s the backfill takes about 12 s, long enough to watch.
export BACKFILLD_RATE_LIMIT=120 BACKFILLD_PROGRESS_INTERVAL_MS=1000
daemon_start d1

# run_in NAME COMMAND: a 120 x 40 session running COMMAND; its exit status goes to
# $T/NAME.rc, and the pane then stays open (a dead pane may drop its last output).
run_in() {
    "${TM[@]}" new-session -d -s "$1" -x 120 -y 40 "$2; echo \$? >'$T/$1.rc'; exec sleep 3600"
}
# The screen as text (wrapped lines joined); never piped into an early-exiting grep under pipefail.
screen() { "${TM[@]}" capture-pane -p -J -t "$1"; }
screen_has() { grep -qE -- "$2" <<<"$(screen "$1")"; }
cursor_shown() { [ "$("${TM[@]}" display-message -p -t "$1" '#{cursor_flag}')" = "1" ]; }
cursor_hidden() { ! cursor_shown "$1"; }
# The percentage on the first line matching PATTERN, or nothing (nor while the watch is idle,
# before the enqueue: 0 of 0 runs).
percent_of() {
    local line
    line=$(grep -m1 -E -- "$2" <<<"$(screen "$1")" || true)
    case $line in *' idle') return 0 ;; esac
    [[ $line =~ ([0-9]+)% ]] && echo "${BASH_REMATCH[1]}"
    return 0
}
# The widest line on the screen (capture-pane -J joins wrapped lines, so a wrap shows as width).
widest() { screen "$1" | awk '{ if (length($0) > w) w = length($0) } END { print w + 0 }'; }

run_in watch "'$BF_BIN' status --watch --interval 0.3"
wait_for "the watch view is drawn" 20 screen_has watch '^backfilld status --watch'
check_cmd "the watch hides the cursor while it draws" cursor_hidden watch
"$BF_BIN" status --watch --interval 0.3 >"$T/plain.out" 2>"$T/plain.err" &
PLAIN=$!
PIDS+=($PLAIN)

run_in wait "'$BF_BIN' enqueue --symbols '$SYMBOLS50' --timeframe h1 --from 2024-01-01 --to 2024-12-31 --wait --interval 0.3"
wait_for "enqueue --wait draws its bar" 20 screen_has wait '^\[[#.]+\] +[0-9]+% '

# Follow both bars until the wait is over: every percentage seen, in order.
: >"$T/watch.pct"
: >"$T/wait.pct"
: >"$T/widths"
deadline=$(($(now_ms) + $(scaled 120) * 1000))
while [ ! -s "$T/wait.rc" ]; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "enqueue --wait still running after $(scaled 120)s"
    percent_of watch '^overall ' >>"$T/watch.pct"
    percent_of wait '^\[[#.]+\]' >>"$T/wait.pct"
    widest watch >>"$T/widths"
    widest wait >>"$T/widths"
    # 10 rows of the definitions with runs left, out of however many still have
    # some: all 50 only until the first symbol's runs complete (half a second
    # in), 10 or more for most of the backfill.
    if screen_has watch '^definitions with the most runs left \(10 of [1-5][0-9]\)$' &&
        screen_has watch '^  [A-Z.]+ +h1   \[[#.]+\] +[0-9]+%  [0-9]+/12 runs  ETA '; then
        touch "$T/defs.seen"
    fi
    sleep 0.2
done
sed -i '/^$/d' "$T/watch.pct" "$T/wait.pct"
monotonic() { sort -n -c "$1" 2>/dev/null; }
in_between() { awk '$1 > 0 && $1 < 100 { n++ } END { exit !(n > 0) }' "$1"; }
distinct() { sort -un "$1" | wc -l; }
check_cmd "the watch bar never goes back ($(tr '\n' ' ' <"$T/watch.pct"))" monotonic "$T/watch.pct"
check_cmd "the watch bar was seen part way" in_between "$T/watch.pct"
check_cmd "the watch bar advanced (3+ values)" test "$(distinct "$T/watch.pct")" -ge 3
check_cmd "the watch listed the definitions with the most runs left, with bars" test -e "$T/defs.seen"
check_cmd "the --wait bar never goes back ($(tr '\n' ' ' <"$T/wait.pct"))" monotonic "$T/wait.pct"
check_cmd "the --wait bar was seen part way" in_between "$T/wait.pct"
check_cmd "no line wrapped at 120 columns (widest $(sort -n "$T/widths" | tail -1))" \
    test "$(sort -n "$T/widths" | tail -1)" -le 119

# The final screens, against the tables.
runs=$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")
bars=$(sql "SELECT count(*) FROM bars")
bars_fmt=$(python3 -c "print(f'{$bars:,}')")
check "every run succeeded in the tables" "600" "$runs"
check "bars_written adds up to the table" "$bars" "$(sql "SELECT sum(bars_written) FROM job_runs")"
check "enqueue --wait exits 0" "0" "$(cat "$T/wait.rc")"
check_cmd "enqueue --wait ends on 100% and done" screen_has wait '^\[#+\] +100%  600/600 runs .* done'
check_cmd "enqueue --wait's summary has the tables' counts" \
    screen_has wait "^done: all 600 runs succeeded, $bars_fmt bars written, in [0-9.]+ s$"
wait_for "enqueue --wait's last output reaches tmux" 10 cursor_shown wait
check_cmd "enqueue --wait shows the cursor again" cursor_shown wait
wait_for "the watch says DONE" 20 screen_has watch 'DONE: nothing queued or running'
check_cmd "the watch's bar is full" screen_has watch '^overall  \[#+\]  100%  600 of 600 runs  done$'
check_cmd "the watch's counts are the tables'" screen_has watch "succeeded 600   failed 0"
check_cmd "the watch's bars are the table's" screen_has watch "^bars     $bars_fmt written "
check_cmd "the watch shows the shared budget" screen_has watch "^budget   120 requests/min shared as 'alpaca'"
check_cmd "the watch shows no failure" screen_has watch '^failures none$'

# A narrower terminal: still no line wraps.
"${TM[@]}" resize-window -t watch -x 60 -y 30
narrow() { [ "$(widest watch)" -le 59 ] && screen_has watch '^overall '; }
wait_for "the watch redraws for 60 columns" 10 narrow
check_cmd "at 60 columns no line is wider than 59" narrow

"${TM[@]}" resize-window -t watch -x 120 -y 40

# Without a terminal: one plain line per interval, no escape codes.
kill -INT "$PLAIN"
plain_rc=0
wait "$PLAIN" || plain_rc=$?
forget_pid "$PLAIN"
check "the plain watch exits 0 on SIGINT" "0" "$plain_rc"
check "the plain watch writes no escape code" "0" "$(grep -c $'\033' "$T/plain.out" || true)"
plain_re='^[0-9]{2}:[0-9]{2}:[0-9]{2}Z [0-9]+% [0-9]+/[0-9]+ runs \(running [0-9]+, queued [0-9]+, failed [0-9]+\) [0-9]+ bars, [-0-9.]+ bars/s, [-0-9.]+ requests/s, (ETA [-0-9a-z<]+|done|idle)$'
check "every plain line has the one shape" "$(wc -l <"$T/plain.out")" "$(grep -cE "$plain_re" "$T/plain.out")"
check_cmd "the plain lines advance and end done" \
    bash -c "grep -qE ' [1-9][0-9]?% ' '$T/plain.out' && tail -1 '$T/plain.out' | grep -qE ' 100% 600/600 runs .* $bars bars, .* done$'"

# --wait without a terminal, with a run that fails: exit 1 and the failure listed.
rc=0
bf enqueue --symbols 'AAPL,BAD$' --timeframe d1 --from 2024-01-01 --to 2024-12-31 --wait \
    --interval 0.2 >"$T/fail.out" 2>"$T/fail.err" || rc=$?
check "--wait exits 1 when a run failed" "1" "$rc"
bad_id=$(sql "SELECT id FROM job_runs WHERE symbol = 'BAD\$'")
check_cmd "the failed run is listed with its id, symbol and error" grep -qE \
    "^  job $bad_id  BAD\\\$ d1 2024-01-01\\.\\.2025-01-01  failed: HTTP 400: invalid symbol: BAD\\\$$" "$T/fail.out"
check_cmd "the summary counts it" \
    grep -qE '^done: 1 of 2 runs succeeded \([0-9,]+ bars written, in [0-9.]+ s\); 1 did not:$' "$T/fail.out"
check_cmd "stderr says how many did not succeed" grep -q '^backfilld enqueue: 1 of 2 runs did not succeed$' "$T/fail.err"
check "the plain --wait writes no escape code" "0" "$(grep -c $'\033' "$T/fail.out" || true)"
check_cmd "the plain --wait prints progress lines" grep -qE '^[0-9]{2}:[0-9]{2}:[0-9]{2} +[0-9]+%  [0-9]+/2 runs ' "$T/fail.out"

# The watch, still running, counts that work too, with its failure. (As a new
# backlog if it saw a run of it queued or running, else as more of the old one:
# the two runs can finish between two polls.)
fail_re="^failures 1 failed, latest [0-9a-z<]+ ago: job $bad_id BAD\\\$ d1: HTTP 400: invalid symbol: BAD\\\$\$"
wait_for "the watch shows the failure and its cause" 20 screen_has watch "$fail_re"
check_cmd "the watch shows the failure and its latest cause" screen_has watch "$fail_re"
two_done() { screen_has watch '^overall  \[#+\]  100%  (2 of 2|602 of 602) runs  done$'; }
wait_for "the watch says the two runs are done" 20 two_done
check_cmd "the watch counts the two runs, done" two_done
check_cmd "the watch counts the failure in the queue line" screen_has watch 'succeeded (1|601)   failed 1$'

# Ctrl-C ends the watch with 0 and gives the cursor back.
"${TM[@]}" send-keys -t watch C-c
wait_for "the watch exits on Ctrl-C" 10 test -s "$T/watch.rc"
check "the watch exits 0 on Ctrl-C" "0" "$(cat "$T/watch.rc")"
wait_for "the watch's last output reaches tmux" 10 cursor_shown watch
check_cmd "the watch shows the cursor again" cursor_shown watch

# Ctrl-C stops waiting (130) and leaves the runs queued: no daemon runs them now.
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 60
run_in wait2 "'$BF_BIN' enqueue --symbols ZZWAIT --timeframe d1 --from 2023-01-01 --to 2023-12-31 --wait"
wait_for "the wait says nothing is claimed" 20 screen_has wait2 'none claimed yet'
"${TM[@]}" send-keys -t wait2 C-c
wait_for "the wait exits on Ctrl-C" 10 test -s "$T/wait2.rc"
check "Ctrl-C on --wait exits 130" "130" "$(cat "$T/wait2.rc")"
check_cmd "it says the runs go on" screen_has wait2 'stopped waiting \(Interrupt\); the 1 run not finished goes on'
check "the run is still queued" "queued" "$(sql "SELECT status FROM job_runs WHERE symbol = 'ZZWAIT'")"
wait_for "the wait's last output reaches tmux" 10 cursor_shown wait2
check_cmd "the cursor is shown again" cursor_shown wait2

# A terminal that cannot move the cursor (TERM=dumb) gets the plain lines, one per interval.
run_in dumb "TERM=dumb '$BF_BIN' status --watch --interval 0.2"
plain_lines() { [ "$(grep -cE "$plain_re" <<<"$(screen dumb)")" -ge 3 ]; }
wait_for "TERM=dumb prints plain lines" 20 plain_lines
check_cmd "TERM=dumb: plain lines, one per interval" plain_lines
"${TM[@]}" send-keys -t dumb C-c
wait_for "TERM=dumb: the watch exits on Ctrl-C" 10 test -s "$T/dumb.rc"
check "TERM=dumb: exit 0 on Ctrl-C" "0" "$(cat "$T/dumb.rc")"

# The definitions list reads what the scheduler has not folded in yet: runs
# that succeeded since the last fold take their definition off the list at
# once, and new ones are on it at once. (Before, the first definitions done
# stayed on top with no run left until the next fold, and the list said
# "none with runs left" while hundreds ran.) No daemon runs now, so nothing
# folds: 12 definitions queued, the runs of the first 10 marked done.
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, backfill_from, backfill_to)
     SELECT 'FOLD' || chr(64 + i), 'd1', 'fetch_historical', '2020-01-01', '2021-01-01' FROM generate_series(1, 12) i"
sql "SELECT enqueue_range(id, backfill_from, backfill_to) FROM job_definitions WHERE symbol LIKE 'FOLD%'" >/dev/null
sql "UPDATE job_runs SET status = 'succeeded', bars_written = 0, finished_at = now()
      WHERE symbol BETWEEN 'FOLDA' AND 'FOLDJ'"
run_in fold "'$BF_BIN' status --watch --interval 0.3"
fold_rows() { screen_has fold '^  FOLDK +d1 ' && screen_has fold '^  FOLDL +d1 '; }
wait_for "the watch lists the two definitions with runs left" 20 fold_rows
check_cmd "FOLDK and FOLDL are listed, with their runs left" \
    screen_has fold '^  FOLDK +d1   \[[#.]+\] +0%  0/[0-9]+ runs  ETA '
check_cmd "none of the ten done is" bash -c "! grep -qE '^  FOLD[A-J] ' <<<\"\$1\"" _ "$(screen fold)"
"${TM[@]}" send-keys -t fold C-c
wait_for "the watch exits on Ctrl-C" 10 test -s "$T/fold.rc"

# Options that do not go together.
rc=0; bf status --interval 1 >/dev/null 2>&1 || rc=$?
check "--interval without --watch is a usage error" "64" "$rc"
rc=0; bf status --watch --json >/dev/null 2>&1 || rc=$?
check "--watch with --json is a usage error" "64" "$rc"
rc=0; bf enqueue --symbols AAPL --timeframe d1 --from 2024-01-01 --wait --interval 0 >/dev/null 2>&1 || rc=$?
check "--interval 0 is bad input" "65" "$rc"
finish
