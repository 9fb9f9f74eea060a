#!/usr/bin/env bash
# No secret ever appears in any output. The Alpaca key id, the secret key and
# the database password are set to recognisable values; then the daemon and
# every command are driven through normal work and error paths (a backfill,
# rejected credentials, a malformed symbol, the database going away mid-run,
# check-config, status, bad arguments, bad settings, --help-config, SIGHUP),
# with every stdout, stderr and log kept in $T/out. None of them, nor the
# error history stored in the database, may hold any of the three values, and
# the daemon's command line must not either. A positive control proves the
# grep finds them where they are.
. "$(dirname "$0")/lib.sh"

KEY="KEYID-7f3a9c"
SECRET="SECRET-b81e55d2"
PGPASS="PGPASS-4c1d9e"
export APCA_API_KEY_ID=$KEY APCA_API_SECRET_KEY=$SECRET
O=$T/out
mkdir -p "$O" "$T/control"

# cap NAME command...: runs it with stdout and stderr in $O/NAME.out and .err; CAP_RC = exit code.
cap() {
    local n=$1
    shift
    CAP_RC=0
    "$@" >"$O/$n.out" 2>"$O/$n.err" </dev/null || CAP_RC=$?
}
# leaks DIR...: prints "file: line" for every line under DIR holding a secret, the
# secret itself replaced by <KEYID>, <SECRET> or <PGPASS> (this output is shown).
leaks() {
    local s
    for s in "$KEY" "$SECRET" "$PGPASS"; do
        grep -rF -- "$s" "$@" 2>/dev/null | sed "s|$s|<${s%%-*}>|g" | cut -c1-400 || true
    done
}
# run_daemon NAME [run args...]: the daemon with its stdout in $O and its log in $O too.
run_daemon() {
    local n=$1
    shift
    "$BF_BIN" run "$@" >"$O/$n.stdout" 2>>"$O/$n.log" &
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
}

pg_start
sql "ALTER USER postgres PASSWORD '$PGPASS'" # auth stays trust: the password goes unused
export BACKFILLD_DATABASE_URL="postgresql://postgres:$PGPASS@/backfilld?host=$T/pg"
sim_start --key "$KEY" --secret "$SECRET"
export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_LOG_LEVEL=debug BACKFILLD_PROGRESS_INTERVAL_MS=200 \
    BACKFILLD_RUN_RETRY_BASE_MS=100 BACKFILLD_METRICS_LISTEN=127.0.0.1:0

# The positive control: the grep finds all three in a dump of our own environment.
env >"$T/control/env.dump"
check "the leak grep finds all three secrets when present" "<KEYID>,<PGPASS>,<SECRET>" \
    "$(leaks "$T/control" | grep -o '<[A-Z]*>' | sort -u | paste -sd,)"

# --- commands, normal paths ---------------------------------------------------------------
cap migrate "$BF_BIN" migrate
check "migrate (URL with the password)" "0" "$CAP_RC"
cap check_config "$BF_BIN" check-config
check "check-config" "0" "$CAP_RC"
cap check_config_alpaca "$BF_BIN" check-config --alpaca
check "check-config --alpaca with good credentials" "0" "$CAP_RC"
# The same settings from a --config file, and from a credentials directory.
printf 'APCA_API_KEY_ID=%s\nAPCA_API_SECRET_KEY="%s"\nBACKFILLD_DATABASE_URL=%s\n' \
    "$KEY" "$SECRET" "$BACKFILLD_DATABASE_URL" >"$T/secrets.conf"
cap check_config_file env -u APCA_API_KEY_ID -u APCA_API_SECRET_KEY -u BACKFILLD_DATABASE_URL \
    "$BF_BIN" --config "$T/secrets.conf" check-config --alpaca
check "check-config --alpaca from a --config file" "0" "$CAP_RC"
mkdir -p "$T/creds"
printf '%s\n' "$KEY" >"$T/creds/alpaca_key_id"
printf '%s\n' "$SECRET" >"$T/creds/alpaca_secret_key"
printf '%s\n' "$BACKFILLD_DATABASE_URL" >"$T/creds/database_url"
cap check_config_creds env -u APCA_API_KEY_ID -u APCA_API_SECRET_KEY -u BACKFILLD_DATABASE_URL \
    CREDENTIALS_DIRECTORY="$T/creds" "$BF_BIN" check-config --alpaca
check "check-config --alpaca from \$CREDENTIALS_DIRECTORY" "0" "$CAP_RC"
cap help "$BF_BIN" --help
cap help_config "$BF_BIN" --help-config
check "--help-config" "0" "$CAP_RC"
cap run_help "$BF_BIN" run --help

# --- a successful backfill, and a malformed symbol -----------------------------------------
cap enqueue_ok "$BF_BIN" enqueue --symbols 'AAPL,MSFT,BAD$' --timeframe d1 --from 2024-01-01 --to 2024-06-30
check "enqueue" "0" "$CAP_RC"
run_daemon d_ok --until-idle
D=$DAEMON_PID
daemon_wait "$D" 60
check "backfill exit code" "0" "$DAEMON_RC"
check "the good runs succeeded" "2" "$(sql "SELECT count(*) FROM job_runs WHERE status = 'succeeded'")"
check "the malformed symbol failed (HTTP 400 path)" "failed" \
    "$(sql "SELECT status FROM job_runs WHERE symbol = 'BAD\$'")"
cap status "$BF_BIN" status
check "status" "0" "$CAP_RC"
cap status_json "$BF_BIN" status --json
check "status --json" "0" "$CAP_RC"

# --- rejected credentials (401) -------------------------------------------------------------
sim_get '/__sim/set?key=other&secret=other' >/dev/null
cap check_config_badcreds "$BF_BIN" check-config --alpaca
check "check-config --alpaca with rejected credentials" "78" "$CAP_RC"
cap enqueue_auth "$BF_BIN" enqueue --symbols GOOGL --timeframe d1 --from 2024-01-01 --to 2024-01-31
run_daemon d_auth
D=$DAEMON_PID
wait_for "credentials rejected" 20 grep -q '"msg":"alpaca credentials rejected' "$O/d_auth.log"
# (this daemon stays up until SIGTERM, so its /proc entry is there to read)
cmdline=$(tr '\0' ' ' </proc/"$D"/cmdline)
check_cmd "the daemon's command line was read ($cmdline)" grep -q 'backfilld run' <<<"$cmdline"
check "no secret in the daemon's /proc/PID/cmdline" "" \
    "$(grep -oF -e "$KEY" -e "$SECRET" -e "$PGPASS" <<<"$cmdline" || true)"
PORT=$(metrics_port "$O/d_auth.log")
curl -s "http://127.0.0.1:$PORT/metrics" >"$O/d_auth.metrics" || true
curl -s "http://127.0.0.1:$PORT/healthz" >"$O/d_auth.healthz" || true
check_cmd "/healthz was answered" test -s "$O/d_auth.healthz"
kill -HUP "$D" # the reload path logs too
wait_for "reloaded" 10 grep -q '"msg":"reloading configuration"' "$O/d_auth.log"
kill -TERM "$D"
daemon_wait "$D" 15
check "exit code after the credentials were rejected" "0" "$DAEMON_RC"
sim_get "/__sim/set?key=$KEY&secret=$SECRET" >/dev/null

# --- the database goes away in the middle of a backfill --------------------------------------
# Slow enough (a page a second, many pages at this page limit) that the runs are still in flight
# however late pg_stop gets to run after the wait_for below.
sim_get '/__sim/set?latency_ms=1000' >/dev/null
cap enqueue_more "$BF_BIN" enqueue --symbols AMZN,META,NVDA --timeframe h1 --from 2024-01-01 --to 2024-03-31
BACKFILLD_PAGE_LIMIT=50 run_daemon d_dbdown --until-idle
D=$DAEMON_PID
wait_for "runs in flight" 20 sql_ge "SELECT count(*) FROM job_runs WHERE status = 'running'" 1
pg_stop
wait_for "connection lost logged" 10 grep -q '"msg":"db connection lost"' "$O/d_dbdown.log"
cap status_dbdown "$BF_BIN" status
check "status with the database down" "69" "$CAP_RC"
cap check_config_dbdown "$BF_BIN" check-config
check "check-config with the database down" "69" "$CAP_RC"
pg_restart_only
sim_get '/__sim/set?latency_ms=0' >/dev/null
daemon_wait "$D" 60
check "exit code after the database came back" "0" "$DAEMON_RC"
check "everything but the bad symbol succeeded" "0" \
    "$(sql "SELECT count(*) FROM job_runs WHERE status <> 'succeeded' AND symbol <> 'BAD\$'")"

# --- bad arguments and bad settings ---------------------------------------------------------
cap enq_none "$BF_BIN" enqueue
cap enq_tf "$BF_BIN" enqueue --symbols AAPL --timeframe h2 --from 2024-01-01
cap enq_sym "$BF_BIN" enqueue --symbols 'BAD SYM,aapl' --timeframe d1 --from 2024-01-01
cap enq_date "$BF_BIN" enqueue --symbols AAPL --timeframe d1 --from yesterday
cap enq_range "$BF_BIN" enqueue --symbols AAPL --timeframe d1 --from 2024-02-01 --to 2024-01-01
cap enq_opt "$BF_BIN" enqueue --symbols AAPL --timeframe d1 --from 2024-01-01 --bogus
cap enq_file "$BF_BIN" enqueue --symbols-file "$T/none.txt" --timeframe d1 --from 2024-01-01
check_cmd "bad enqueue arguments are refused" test "$CAP_RC" -ne 0
cap status_limit "$BF_BIN" status --limit abc
cap bad_int env BACKFILLD_CONCURRENCY=abc "$BF_BIN" status
check "a bad setting is a configuration error" "78" "$CAP_RC"
cap bad_key env BACKFILLD_SECRETS=x "$BF_BIN" run
check "an unknown key is a configuration error" "78" "$CAP_RC"
cap bad_level env BACKFILLD_LOG_LEVEL=loud "$BF_BIN" run
cap bad_url env APCA_API_DATA_URL=ftp://example "$BF_BIN" run
cap bad_run_arg "$BF_BIN" run --bogus
cap no_secret env -u APCA_API_SECRET_KEY "$BF_BIN" run
check "run without a secret key" "78" "$CAP_RC"
printf 'APCA_API_SECRET_KEY="%s\n' "$SECRET" >"$T/bad1.conf"      # unbalanced quote
printf 'export APCA_API_SECRET_KEY=%s\n' "$SECRET" >"$T/bad2.conf" # shell syntax
printf '%s\n' "$SECRET" >"$T/bad3.conf"                            # a bare value
printf 'APCA_API_KEY_ID=%s\nBACKFILLD_RATE_LIMIT=fast\n' "$KEY" >"$T/bad4.conf"
for i in 1 2 3 4; do
    cap "bad_conf$i" env -u APCA_API_SECRET_KEY -u APCA_API_KEY_ID "$BF_BIN" --config "$T/bad$i.conf" check-config
    check "config file $i is refused" "78" "$CAP_RC"
done
cap bad_dburl_port env BACKFILLD_DATABASE_URL="postgresql://postgres:$PGPASS@/backfilld?host=$T/pg&port=abc" \
    "$BF_BIN" status
check_cmd "a bad port in the URL is refused" test "$CAP_RC" -ne 0

# What the database keeps of the runs' errors is output too (status shows it).
psql -XAq -c "SELECT id, status, last_error, errors FROM job_runs ORDER BY id" >"$O/job_runs.txt"
check_cmd "error history was captured" grep -q 'invalid symbol' "$O/job_runs.txt"

# --- the verdict ----------------------------------------------------------------------------
nfiles=$(find "$O" -type f | wc -l)
check_cmd "outputs were collected ($nfiles files)" test "$nfiles" -ge 40
check_cmd "the daemon logs are not empty" test -s "$O/d_ok.log" -a -s "$O/d_auth.log" -a -s "$O/d_dbdown.log"
check "no secret in any output" "" "$(leaks "$O")"

# A database password with a '%' that is not a valid escape (easy to write in
# a URL): libpq quotes the whole token in its parse error, and that error is
# printed by the commands and logged by the daemon, before and after a SIGHUP.
mkdir -p "$T/pct"
BADURL="postgresql://postgres:$PGPASS%zz@/backfilld?host=$T/pg"
BACKFILLD_DATABASE_URL=$BADURL "$BF_BIN" status >"$T/pct/status.out" 2>"$T/pct/status.err" || true
BACKFILLD_DATABASE_URL=$BADURL "$BF_BIN" run >"$T/pct/run.stdout" 2>"$T/pct/run.log" &
D=$!
PIDS+=("$D")
wait_for "db connect failed (bad URL)" 10 grep -q '"msg":"db connect failed"' "$T/pct/run.log"
# ...and after a SIGHUP, which rebuilds the list of secrets the log scrubs.
kill -HUP "$D"
wait_for "reload (bad URL)" 10 grep -q '"msg":"reloading configuration"' "$T/pct/run.log"
after_hup() { awk '/"msg":"reloading configuration"/ { r = 1 } r && /"msg":"db connect failed"/ { f = 1 } END { exit !f }' "$T/pct/run.log"; }
wait_for "db connect failed after the reload" 20 after_hup
kill -TERM "$D"
daemon_wait "$D" 15
check "no secret in any output with a malformed URL" "" "$(leaks "$T/pct")"

# Short secrets (APCA_API_SECRET_KEY=s, a development password "postgres")
# are redacted as whole words only: before, every "s" of every line became
# [redacted], keys and event names included.
mkdir -p "$T/short"
SHORTURL="host=127.0.0.1 port=$(free_port) user=postgres password=postgres dbname=backfilld"
APCA_API_SECRET_KEY=s BACKFILLD_DATABASE_URL=$SHORTURL "$BF_BIN" run >"$T/short/run.stdout" 2>"$T/short/run.log" &
D=$!
PIDS+=("$D")
wait_for "db connect failed (short secrets)" 10 grep -q '"msg":"db connect failed"' "$T/short/run.log"
kill -TERM "$D"
daemon_wait "$D" 15
check_cmd "a short secret leaves keys and words alone" \
    grep -q '"msg":"db connect failed","conn":"main","error":"connection to server at \\"127.0.0.1\\", port [0-9]* failed: Connection refused","retry_in_ms":' "$T/short/run.log"
check "no [redacted] where no secret was" "0" "$(grep -c 'redacted' "$T/short/run.log" || true)"
finish
