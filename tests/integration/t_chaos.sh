#!/usr/bin/env bash
# Chaos. Three daemons drain 3,000 runs (60 symbols x 30 years of d1, 50
# symbols x 24 months of h1: 875,065 bars) from a simulator that answers 3% of
# requests with a 5xx and breaks or truncates 3% of its bodies, with short
# pages and latency. Meanwhile one daemon after another is kill -9ed and
# started again (20 kills, paced by the drain's progress so they spread over
# it and land mid-fetch, mid-pagination and mid-write), and Postgres is
# restarted twice (pg_ctl restart -m fast, later -m immediate); the daemons
# must reconnect by themselves. At the end every run succeeded, the bars are
# exactly the simulator's, and each run's bars_written equals the bars stored
# in its range. A rescue after kill -9 spends an attempt (as in River and
# Oban), so the runs get 25; what must never happen is a bar lost or a run
# stuck.
#
# The fleet is mixed on purpose: d1 fetches one symbol a request with pages of
# at most 100 bars (every run walks several pages), d2 and d3 coalesce symbols
# into multi-symbol requests (runs complete as the page order moves past them,
# symbols are stitched across pages). d1 and d2 take a new worker name at each
# start (as the default host:pid:random does); d3 keeps one configured name
# across restarts, so its new process meets its dead predecessor's leases.
. "$(dirname "$0")/lib.sh"

KILLS=20
D1_SYMS="$SYMBOLS50,XAA,XAB,XAC,XAD,XAE,XAF,XAG,XAH,XAI,XAJ"   # 60 symbols
H1_SYMS="$SYMBOLS50"
START_MS=$(now_ms)

pg_start
# lib.sh's asynchronous commit stays on: -m immediate then loses the last
# acknowledged commits, as a crash or an asynchronous failover would. A run
# whose earlier pages went with them must not complete with its later pages
# (complete_job_runs counts what is stored, sql/003): it is fetched again.
# CHAOS_SYNC_COMMIT=on makes every acknowledged commit durable instead.
sql "ALTER SYSTEM SET synchronous_commit = ${CHAOS_SYNC_COMMIT:-off}" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sim_start --fail-rate 0.03 --malformed-rate 0.03 --short-pages --latency-ms 150 --seed 11
bf migrate >/dev/null
# A slow disk: every upsert into bars takes 40 ms more, so a write is in flight
# much of the time and the kills and restarts land in the middle of some.
sql "CREATE FUNCTION chaos_slow_write() RETURNS trigger LANGUAGE plpgsql AS
       \$\$ BEGIN PERFORM pg_sleep(0.04); RETURN NULL; END \$\$;
     CREATE TRIGGER chaos_slow_write AFTER INSERT ON bars
       FOR EACH STATEMENT EXECUTE FUNCTION chaos_slow_write()"
bf enqueue --symbols "$D1_SYMS" --timeframe d1 --from 1995-01-01 --to 2024-12-31 --max-attempts 25 >/dev/null
bf enqueue --symbols "$H1_SYMS" --timeframe h1 --from 2023-01-01 --to 2024-12-31 --max-attempts 25 >/dev/null
TOTAL=$(sql "SELECT count(*) FROM job_runs")
check "3000 runs queued" "3000" "$TOTAL"

# Short leases (renewed every second) and a fast rescue, so a dead daemon's runs
# come back within seconds; quick page and run retries; small slots, so each
# daemon holds a few dozen runs and every kill orphans some.
export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_LEASE_SECONDS=3 BACKFILLD_RESCUE_INTERVAL_MS=500 \
    BACKFILLD_RUN_RETRY_BASE_MS=100 BACKFILLD_RUN_RETRY_MAX_MS=1000 BACKFILLD_RETRY_BASE_MS=5 \
    BACKFILLD_RETRY_MAX_MS=100 BACKFILLD_PAGE_RETRIES=8 BACKFILLD_CONCURRENCY=8 \
    BACKFILLD_CLAIM_BATCH=8 BACKFILLD_MAX_CONNECTIONS=4 BACKFILLD_POLL_INTERVAL_MS=200 BACKFILLD_PROGRESS_INTERVAL_MS=2000
LIMIT=(x 100 600 300)
LEVEL=(x debug info info)   # d1 logs every page: the kills can be seen to land mid-pagination
PID=(x 0 0 0)
GEN=(x 0 0 0)
WORKER=(x "" "" "")
LOGSTART=(x 0 0 0)   # the slot log's line count when its current process started
KILLED=()            # worker names of the killed d1/d2 processes
N_KILLS=0
MIDPAGE_KILLS=0      # kills of d1 that caught runs between two pages
N_PG_RESTARTS=0

succeeded() { sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'"; }

# What is not done, for a failure report.
diag() {
    echo "----- job_runs by status -----"
    sql "SELECT status, count(*), max(attempt) FROM job_runs GROUP BY 1 ORDER BY 1"
    echo "----- runs not succeeded (first 20) -----"
    sql "SELECT id, symbol, timeframe, range_start, status, attempt, locked_by, locked_until, run_after, last_error
           FROM job_runs WHERE status <> 'succeeded' ORDER BY id LIMIT 20"
}

# slot_start I: a new process in slot I (log $T/dI.log, appended).
slot_start() {
    local i=$1 w
    GEN[i]=$((GEN[i] + 1))
    if [ "$i" = 3 ]; then w=chaos-d3; else w="chaos-d$i-g${GEN[i]}"; fi
    WORKER[i]=$w
    LOGSTART[i]=0
    if [ -e "$T/d$i.log" ]; then LOGSTART[i]=$(wc -l <"$T/d$i.log"); fi
    BACKFILLD_WORKER_ID=$w BACKFILLD_PAGE_LIMIT=${LIMIT[i]} BACKFILLD_LOG_LEVEL=${LEVEL[i]} \
        daemon_start "d$i" --until-idle
    PID[i]=$DAEMON_PID
}

# since_start I PATTERN: lines matching PATTERN that slot I's current process logged.
since_start() {
    tail -n +$((LOGSTART[$1] + 1)) "$T/d$1.log" | grep -c -- "$2" || true
}

# Fails if a daemon exited on its own: nothing but this script may stop one mid-drain.
check_alive() {
    local i
    for i in 1 2 3; do
        if ! kill -0 "${PID[i]}" 2>/dev/null; then
            daemon_wait "${PID[i]}" 5
            diag
            fail "d$i (${WORKER[i]}) exited by itself with code $DAEMON_RC during the drain"
        fi
    done
}

# wait_succeeded N: polls until N runs succeeded; no progress for 120 s (scaled) is a stuck drain.
wait_succeeded() {
    local n=$1 deadline last=-1 now
    while :; do
        check_alive
        now=$(succeeded)
        [ "$now" -ge "$n" ] && return 0
        if [ "$now" != "$last" ]; then
            last=$now
            deadline=$(($(now_ms) + $(scaled 120) * 1000))
        elif [ "$(now_ms)" -ge "$deadline" ]; then
            diag
            fail "the drain is stuck at $now of $TOTAL runs succeeded (waiting for $n)"
        fi
        sleep 0.1
    done
}

# holds_runs I: slot I's current process is up and holds runs in flight (for d3,
# whose name outlives its processes, the log says this process started some).
holds_runs() {
    [ "$(since_start "$1" '"msg":"run started"')" -ge 3 ] &&
        sql_ge "SELECT count(*) FROM job_runs WHERE status = 'running' AND locked_by = '${WORKER[$1]}'" 3
}

# midpage: runs that d1's current process had fetched a page of, but not the last one.
midpage() {
    local seg
    seg=$(tail -n +$((LOGSTART[1] + 1)) "$T/d1.log" | grep '"msg":"page fetched"' || true)
    comm -23 <(grep '"last":false' <<<"$seg" | grep -o '"job_id":[0-9]*' | sort -u) \
        <(grep '"last":true' <<<"$seg" | grep -o '"job_id":[0-9]*' | sort -u) | wc -l
}

# kill_slot I: kill -9 slot I's process while it holds runs, then start a new one.
kill_slot() {
    local i=$1
    wait_for "d$i (${WORKER[i]}) holds runs" 60 holds_runs "$i"
    check_alive
    sleep "0.$((RANDOM % 10))"   # pacing only: land at a random point of its fetches and writes
    kill -9 "${PID[i]}" 2>/dev/null || true   # it may have exited in the meantime: caught below
    daemon_wait "${PID[i]}" 10
    if [ "$DAEMON_RC" != 137 ]; then
        diag
        fail "d$i (${WORKER[i]}) exited with $DAEMON_RC before kill $((N_KILLS + 1)), not by it"
    fi
    N_KILLS=$((N_KILLS + 1))
    [ "$i" = 3 ] || KILLED+=("${WORKER[i]}")
    local mid=""
    if [ "$i" = 1 ]; then
        mid=$(midpage)
        [ "$mid" -eq 0 ] || MIDPAGE_KILLS=$((MIDPAGE_KILLS + 1))
        mid=", $mid of its runs between two pages"
    fi
    log "kill $N_KILLS: d$i (${WORKER[i]}) at $(succeeded)/$TOTAL succeeded$mid"
    slot_start "$i"
}

# pg_restart MODE: pg_ctl restart -m MODE mid-drain, as soon as a daemon is
# writing bars; every live daemon must reconnect by itself.
pg_restart() {
    wait_for "a write in flight" 30 sql_ge "SELECT count(*) FROM pg_stat_activity
        WHERE application_name = 'backfilld' AND state = 'active'
          AND (query LIKE 'INSERT INTO bars%' OR query LIKE 'COPY bars%')" 1
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -l "$T/pg/postgres.log" -m "$1" \
        -w -t 60 restart >/dev/null || fail "pg_ctl restart -m $1"
    N_PG_RESTARTS=$((N_PG_RESTARTS + 1))
    log "pg_ctl restart -m $1 at $(succeeded)/$TOTAL succeeded"
    # The four sessions (main, lease, two writers) of each of the three daemons
    # (the dead ones' went with the restart).
    wait_for "all three daemons reconnected after -m $1" 60 \
        sql_ge "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'backfilld'" 12
}

for i in 1 2 3; do slot_start "$i"; done

# The chaos: kill k when k/25 of the runs have succeeded (4% .. 80%), round robin;
# Postgres restarts at 30% (-m fast) and 62% (-m immediate).
for k in $(seq 1 $KILLS); do
    wait_succeeded $((TOTAL * k / 25))
    kill_slot $(((k - 1) % 3 + 1))
    if [ "$k" = 7 ]; then
        wait_succeeded $((TOTAL * 30 / 100))
        pg_restart fast
    elif [ "$k" = 15 ]; then
        wait_succeeded $((TOTAL * 62 / 100))
        pg_restart immediate
    fi
done
CHAOS_MS=$(($(now_ms) - START_MS))
log "chaos over after $((CHAOS_MS / 1000)) s at $(succeeded)/$TOTAL succeeded; the last three drain the rest"

# The last processes drain the rest and exit by themselves (--until-idle).
deadline=$(($(now_ms) + $(scaled 180) * 1000))
while kill -0 "${PID[1]}" 2>/dev/null || kill -0 "${PID[2]}" 2>/dev/null || kill -0 "${PID[3]}" 2>/dev/null; do
    if [ "$(now_ms)" -ge "$deadline" ]; then
        diag
        fail "the daemons did not finish within $(scaled 180) s of the last kill"
    fi
    sleep 0.2
done
for i in 1 2 3; do
    daemon_wait "${PID[i]}" 5
    check "d$i's last process exits 0" "0" "$DAEMON_RC"
done
DRAIN_MS=$(($(now_ms) - START_MS))

check "$KILLS kill -9s done, each of a live daemon holding runs" "$KILLS" "$N_KILLS"
check "two Postgres restarts done (-m fast, -m immediate)" "2" "$N_PG_RESTARTS"
resent=$(cat "$T"/d?.log | grep -c '"msg":"write retried after reconnect"' || true)
log "writes in flight at the restarts, sent again: $resent"
lost=$(cat "$T"/d?.log | grep -c '"msg":"db connection lost"' || true)
check_cmd "the daemons logged their lost sessions ($lost) and reconnected" test "$lost" -ge 6

check "every run succeeded" "$TOTAL|$TOTAL" \
    "$(sql "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM job_runs")"
check "nothing queued, running or locked" "0" \
    "$(sql "SELECT count(*) FROM job_runs WHERE status <> 'succeeded' OR locked_by IS NOT NULL")"

# The kills mattered: the dead processes' runs were rescued by lease expiry.
rescued=$(sql "SELECT count(*) FROM job_runs WHERE errors @> '[{\"rescued\": true}]'")
check_cmd "runs were rescued after the kills ($rescued runs)" test "$rescued" -gt 0
rescue_lines=$(cat "$T"/d?.log | grep -c '"msg":"expired leases rescued"' || true)
check_cmd "rescues were logged ($rescue_lines lines)" test "$rescue_lines" -gt 0
unrescued=""
for w in "${KILLED[@]}"; do
    n=$(sql "SELECT count(*) FROM job_runs WHERE errors @> '[{\"rescued\": true, \"worker\": \"$w\"}]'")
    [ "$n" -gt 0 ] || unrescued="$unrescued $w"
done
check "every killed d1/d2 process left runs that were rescued" "" "$unrescued"
check_cmd "d3's dead processes' runs were rescued too" \
    sql_ge "SELECT count(*) FROM job_runs WHERE errors @> '[{\"rescued\": true, \"worker\": \"chaos-d3\"}]'" 1
check_cmd "kills of d1 caught runs mid-pagination ($MIDPAGE_KILLS of 7)" test "$MIDPAGE_KILLS" -ge 1
log "attempts: $(sql "SELECT string_agg(attempt || 'x' || n, ' ') FROM (SELECT attempt, count(*) n FROM job_runs GROUP BY 1 ORDER BY 1) a")"
log "runs fetched again because a lost commit took some of their bars: $(sql "SELECT count(*) FROM job_runs WHERE errors::text LIKE '%pages were lost with a database crash%'")"

# Each run's count is the bars stored in its range [range_start, range_end): a
# run completed with a page missing shows here first, by name.
bad=$(sql "SELECT count(*) FROM job_runs r
            WHERE r.bars_written <> (SELECT count(*) FROM bars b WHERE b.symbol = r.symbol
                                       AND b.timeframe = r.timeframe
                                       AND b.ts >= r.range_start AND b.ts < r.range_end)")
if [ "$bad" != 0 ]; then
    sql "SELECT r.id, r.symbol, r.timeframe, r.range_start, r.attempt, r.bars_written, count(b.ts)
           FROM job_runs r LEFT JOIN bars b ON b.symbol = r.symbol AND b.timeframe = r.timeframe
                AND b.ts >= r.range_start AND b.ts < r.range_end
          GROUP BY r.id HAVING r.bars_written <> count(b.ts) ORDER BY r.id LIMIT 20"
fi
check "every run's bars_written equals the bars in its range" "0" "$bad"
check "and they add up to the table" "$(sql "SELECT count(*) FROM bars")" \
    "$(sql "SELECT sum(bars_written) FROM job_runs")"

# The data: exactly the simulator's, both timeframes.
load_expected d1 --symbols "$D1_SYMS" --timeframe 1Day --start "$(ny 1995-01-01)" --end "$(ny_end 2024-12-31)"
sql "CREATE TABLE expected_d1 AS TABLE expected_bars"
load_expected h1 --symbols "$H1_SYMS" --timeframe 1Hour --start "$(ny 2023-01-01)" --end "$(ny_end 2024-12-31)"
sql "INSERT INTO expected_bars TABLE expected_d1"
check_bars_exact

sanitizer=$(cat "$T"/d?.log | grep -cE 'ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: [A-Za-z]+Sanitizer' || true)
check "no sanitizer report in any daemon log" "0" "$sanitizer"

fivexx=$(sim_counter 'sum(v for k, v in c["by_status"].items() if k.startswith("5"))')
malformed=$(sim_counter 'c["by_status"].get("200_malformed", 0)')
log "simulator: $(sim_counter 'c["requests"]') requests, $fivexx 5xx, $malformed malformed"
check_cmd "faults were injected ($fivexx 5xx, $malformed malformed)" test "$fivexx" -gt 50 -a "$malformed" -gt 50
log "runs $TOTAL, bars $(sql "SELECT count(*) FROM bars"), kills $N_KILLS, pg restarts $N_PG_RESTARTS," \
    "runs rescued $rescued, max attempt $(sql "SELECT max(attempt) FROM job_runs"), chaos $((CHAOS_MS / 1000)) s," \
    "drained $((DRAIN_MS / 1000)) s, total $((($(now_ms) - START_MS) / 1000)) s"
finish
