#!/usr/bin/env bash
# Several instances per host from the template unit, config/backfilld@.service:
#  - systemd-analyze rates an instance's sandbox at 2.0 or less (offline) and
#    "verify" finds nothing; the sandbox block is word for word the main
#    unit's, and so is every other [Service] setting except ExecStart= and
#    LoadCredential=, which name the instance (%i);
#  - two instances, a and b, started the way systemd would start them (the
#    template's ExecStart= with %i replaced, a clean environment, the
#    instance's credentials in $CREDENTIALS_DIRECTORY, a notify socket each),
#    each with its own /etc/backfilld/NAME.env (metrics port, worker id),
#    drain one queue in one database together: both send READY=1, both claim
#    runs, every run is claimed once per attempt and succeeds, both metrics
#    ports answer and add up to the total, and the data is exact;
#  - a third instance given b's metrics port exits at once, saying why.
# systemd is not PID 1 here, so nothing is started through systemctl.
set -euo pipefail # also if lib.sh cannot be read: nothing may run with $T unset
. "$(dirname "$0")/lib.sh"

UNIT=$SRC_DIR/config/backfilld@.service
MAIN_UNIT=$SRC_DIR/config/backfilld.service
MAX_EXPOSURE=2.0
command -v systemd-analyze >/dev/null ||
    fail "systemd-analyze not found (Debian: apt-get install systemd)"

# --- the template, statically --------------------------------------------------------------
mkdir -p "$T/unit" "$T/man/man8"
sed "s|^ExecStart=/usr/local/bin/backfilld |ExecStart=$BF_BIN |" "$UNIT" >"$T/unit/backfilld@.service"
# Documentation=man:backfilld(8): verify asks man for it.
cp "$SRC_DIR/docs/backfilld.8" "$T/man/man8/"
rc=0
(cd "$T/unit" && systemd-analyze security --offline=yes --no-pager backfilld@a.service) \
    >"$T/security.txt" 2>&1 || rc=$?
line=$(grep -m1 'Overall exposure level' "$T/security.txt" || true)
log "$line"
score=$(printf '%s\n' "$line" | sed -nE 's/.*: *([0-9]+(\.[0-9]+)?).*/\1/p')
check "systemd-analyze security ran on backfilld@a.service" "0" "$rc"
check_cmd "backfilld@a.service exposure ${score:-?} <= $MAX_EXPOSURE" \
    awk -v s="${score:-99}" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'
rc=0
MANPATH=$T/man systemd-analyze verify "$T/unit/backfilld@a.service" >"$T/verify.txt" 2>&1 || rc=$?
[ "$rc" -eq 0 ] && [ ! -s "$T/verify.txt" ] || cat "$T/verify.txt" >&2
check "systemd-analyze verify backfilld@a.service: exit code" "0" "$rc"
check "systemd-analyze verify backfilld@a.service: no findings" "" "$(cat "$T/verify.txt")"

# sandbox FILE: from the "--- Sandbox" line to [Install], comments included.
sandbox() { sed -n '/^# --- Sandbox/,/^\[Install\]/p' "$1"; }
check_cmd "the template has a sandbox block" grep -q '^DynamicUser=yes$' <(sandbox "$UNIT")
check "the sandbox block is the main unit's, word for word" "$(sandbox "$MAIN_UNIT")" "$(sandbox "$UNIT")"
# settings FILE: the [Service] settings before the sandbox, without comments,
# ExecStart= and LoadCredential=.
settings() {
    sed -n '/^\[Service\]/,/^# --- Sandbox/p' "$1" | grep -Ev '^(#|$|ExecStart=|LoadCredential=)'
}
check "the other [Service] settings are the main unit's" "$(settings "$MAIN_UNIT")" "$(settings "$UNIT")"
check "ExecStart= reads /etc/backfilld/%i.env" \
    "ExecStart=/usr/local/bin/backfilld --config /etc/backfilld/%i.env run" "$(grep '^ExecStart=' "$UNIT")"
for cred in alpaca_key_id alpaca_secret_key database_url; do
    check_cmd "LoadCredential=$cred comes from credentials/%i/" \
        grep -qx "LoadCredential=$cred:/etc/backfilld/credentials/%i/$cred" "$UNIT"
done

# --- two instances against one database --------------------------------------------------
pg_start
sim_start --latency-ms 20
bf migrate >/dev/null
ETC=$T/etc/backfilld
mkdir -p "$ETC"

# notify_start NAME: a datagram receiver on $T/NAME.sock, one line of
# $T/NAME.notify per datagram (as t_service.sh does).

# instance_setup NAME PORT: /etc/backfilld/NAME.env as an operator would write it
# (a copy of the shipped example with the instance's port and worker id, and
# this test's simulator and tunables), and the instance's three credentials.
instance_setup() {
    local n=$1 port=$2
    sed -e "s|^BACKFILLD_METRICS_LISTEN=.*|BACKFILLD_METRICS_LISTEN=127.0.0.1:$port|" \
        -e "s|^BACKFILLD_WORKER_ID=.*|BACKFILLD_WORKER_ID=host-$n|" \
        -e "s|^APCA_API_DATA_URL=.*|APCA_API_DATA_URL=$APCA_API_DATA_URL|" \
        -e "s|^BACKFILLD_RATE_LIMIT=.*|BACKFILLD_RATE_LIMIT=600000|" \
        -e "s|^BACKFILLD_CONCURRENCY=.*|BACKFILLD_CONCURRENCY=8|" \
        -e "s|^BACKFILLD_CLAIM_BATCH=.*|BACKFILLD_CLAIM_BATCH=4|" \
        -e "s|^BACKFILLD_PROGRESS_INTERVAL_MS=.*|BACKFILLD_PROGRESS_INTERVAL_MS=500|" \
        "$SRC_DIR/config/backfilld.env.example" >"$ETC/$n.env"
    chmod 0644 "$ETC/$n.env"
    mkdir -p "$T/credentials/$n"
    chmod 0700 "$T/credentials/$n"
    printf '%s' "$APCA_API_KEY_ID" >"$T/credentials/$n/alpaca_key_id"
    printf '%s' "$APCA_API_SECRET_KEY" >"$T/credentials/$n/alpaca_secret_key"
    printf '%s' "$BACKFILLD_DATABASE_URL" >"$T/credentials/$n/database_url"
    chmod 0600 "$T/credentials/$n"/*
}

# instance_start NAME: the template's ExecStart= for instance NAME, as systemd
# runs it: %i replaced, a clean environment (no variable of this test's leaks
# in: the settings come from NAME.env), the credentials where LoadCredential=
# puts them, and a notify socket. Sets INSTANCE_PID; log in $T/NAME.log.
instance_start() {
    local n=$1 exec_start args
    exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
    exec_start=${exec_start//%i/$n}
    exec_start=${exec_start//\/usr\/local\/bin\/backfilld/$BF_BIN}
    exec_start=${exec_start//\/etc\/backfilld\//$ETC\/}
    read -ra args <<<"$exec_start"
    notify_start "$n"
    env -i PATH=/usr/bin:/bin CREDENTIALS_DIRECTORY="$T/credentials/$n" \
        NOTIFY_SOCKET="$T/$n.sock" "${args[@]}" 2>>"$T/$n.log" &
    INSTANCE_PID=$!
    PIDS+=("$INSTANCE_PID")
    echo "${args[*]}" >"$T/$n.cmdline"
}

ready_or_gone() { grep -q 'READY=1' "$T/$1.notify" || ! kill -0 "$2" 2>/dev/null; }
# instance_up NAME: sets up and starts instance NAME on a free metrics port and
# waits for its READY=1; sets INSTANCE_PORT and INSTANCE_PID. A port that
# another process took between free_port and the daemon's bind makes the
# daemon exit ("cannot serve metrics"): then again with another port.
instance_up() {
    local n=$1 try
    for try in 1 2 3 4 5; do
        INSTANCE_PORT=$(free_port)
        instance_setup "$n" "$INSTANCE_PORT"
        instance_start "$n"
        wait_for "READY=1 from $n, or its exit" 30 ready_or_gone "$n" "$INSTANCE_PID"
        grep -q 'READY=1' "$T/$n.notify" && return 0
        daemon_wait "$INSTANCE_PID" 10
        grep -q '"msg":"cannot serve metrics"' "$T/$n.log" ||
            fail "instance $n exited ($DAEMON_RC) before READY=1"
        log "port $INSTANCE_PORT was taken before $n could bind it; trying another"
    done
    fail "instance $n found no free metrics port in 5 tries"
}

# Both ready (READY=1 to their own notify socket) before there is any work, so
# both are there to claim it.
instance_up a
PID_A=$INSTANCE_PID
PORT_A=$INSTANCE_PORT
instance_up b
PID_B=$INSTANCE_PID
PORT_B=$INSTANCE_PORT
check "instance a runs --config NAME.env run" "$BF_BIN --config $ETC/a.env run" "$(cat "$T/a.cmdline")"
check_cmd "a sent READY=1" grep -q 'READY=1' "$T/a.notify"
check_cmd "b sent READY=1" grep -q 'READY=1' "$T/b.notify"
check_cmd "a reads its worker id from a.env" grep -q '"worker":"host-a"' "$T/a.log"

bf enqueue --symbols "$SYMBOLS50" --timeframe h1 --from 2024-07-01 --to 2024-12-31 >/dev/null
TOTAL=$(sql "SELECT count(*) FROM job_runs")
check "300 runs queued" "300" "$TOTAL"
wait_for "every run succeeded" 120 sql_eq "SELECT count(*) FROM job_runs WHERE status = 'succeeded'" "$TOTAL"
check "every run succeeded on its first attempt" "$TOTAL|$TOTAL" \
    "$(sql "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE attempt = 1) FROM job_runs")"
check "one claim per run and attempt" "$TOTAL|$TOTAL" \
    "$(sql "SELECT count(*), count(DISTINCT (run_id, attempt)) FROM job_run_claims")"
check "both instances claimed runs, under their own worker ids" "host-a,host-b" \
    "$(sql "SELECT string_agg(DISTINCT worker, ',' ORDER BY worker) FROM job_run_claims")"
log "claims per instance: $(sql "SELECT string_agg(worker || '=' || n, ' ') FROM (SELECT worker, count(*) n FROM job_run_claims GROUP BY 1 ORDER BY 1) x")"

# Each instance's own metrics port; their succeeded counters add up to the total.
succeeded() {
    curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk '$1 == "backfilld_runs_succeeded_total" { print $2 }'
}
health() { curl -s --max-time 5 "http://127.0.0.1:$1/healthz"; }
SA=$(succeeded "$PORT_A")
SB=$(succeeded "$PORT_B")
check_cmd "a's /metrics answers on its port $PORT_A (succeeded $SA)" test -n "$SA"
check_cmd "b's /metrics answers on its port $PORT_B (succeeded $SB)" test -n "$SB"
check "a's and b's succeeded runs add up to the total" "$TOTAL" \
    "$(python3 -c 'import sys; print(int(float(sys.argv[1]) + float(sys.argv[2])))' "$SA" "$SB")"
check "a's /healthz" "ok" "$(health "$PORT_A")"
check "b's /healthz" "ok" "$(health "$PORT_B")"
load_expected h1 --symbols "$SYMBOLS50" --timeframe 1Hour --start "$(ny 2024-07-01)" --end "$(ny_end 2024-12-31)"
check_bars_exact

# A third instance on b's port cannot serve metrics: it exits rather than run unobserved.
instance_setup c "$PORT_B"
instance_start c
PID_C=$INSTANCE_PID
daemon_wait "$PID_C" 30
check_cmd "instance c on b's port exits non-zero (exit $DAEMON_RC)" test "$DAEMON_RC" -ne 0
check_cmd "c's log says it cannot serve metrics on that port" \
    grep -q "\"msg\":\"cannot serve metrics\",\"listen\":\"127.0.0.1:$PORT_B\"" "$T/c.log"
check "b still answers" "ok" "$(health "$PORT_B")"

kill -TERM "$PID_A" "$PID_B"
daemon_wait "$PID_A" 30
check "a exits 0 on SIGTERM" "0" "$DAEMON_RC"
daemon_wait "$PID_B" 30
check "b exits 0 on SIGTERM" "0" "$DAEMON_RC"
finish
