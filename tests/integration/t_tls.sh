#!/usr/bin/env bash
# TLS everywhere, as with a managed Postgres and the real Alpaca: Postgres
# accepts only hostssl connections, and the daemon connects with
# sslmode=verify-full against a private CA; Alpaca (the simulator behind a
# TLS front) is reached over https with BACKFILLD_CA_FILE. A wrong CA is
# refused on either side, with a message that says it is the certificate.
. "$(dirname "$0")/lib.sh"

# A private CA, a server certificate for localhost and 127.0.0.1, and a second CA that signed nothing.
mkdir -p "$T/tls"
cd "$T/tls"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=backfilld-test-ca \
    >/dev/null 2>&1
openssl req -x509 -newkey rsa:2048 -nodes -keyout wrong.key -out wrong-ca.crt -days 2 -subj /CN=some-other-ca \
    >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost >/dev/null 2>&1
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 \
    -extfile san.ext >/dev/null 2>&1
cat server.crt server.key >server.pem
cd - >/dev/null
check_cmd "the server certificate is the CA's" openssl verify -CAfile "$T/tls/ca.crt" "$T/tls/server.crt"

# Postgres on TCP, hostssl only (the Unix socket stays for the test's own psql).
pg_start_tcp
P=$PG_TCP_PORT
install -o postgres -m 600 "$T/tls/server.crt" "$T/pg/data/server.crt"
install -o postgres -m 600 "$T/tls/server.key" "$T/pg/data/server.key"
printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" >>"$T/pg/data/postgresql.conf"
printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n' >"$T/pg/data/pg_hba.conf"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$T/pg/data" -l "$T/pg/postgres.log" -w -t 60 restart >/dev/null
plain=$(psql "host=127.0.0.1 port=$P user=postgres dbname=backfilld sslmode=disable" -XAtqc 'SELECT 1' 2>&1 || true)
check_cmd "a connection without TLS is refused" grep -q 'no pg_hba.conf entry.*no encryption' <<<"$plain"
bf migrate >/dev/null

# Alpaca over https: the simulator behind socat's TLS.
sim_start
TLS_PORT=$(free_port)
socat "OPENSSL-LISTEN:$TLS_PORT,bind=127.0.0.1,reuseaddr,fork,cert=$T/tls/server.pem,verify=0" \
    "TCP:127.0.0.1:$SIM_PORT" 2>"$T/socat.log" &
PIDS+=($!)
tls_up() { curl -s --cacert "$T/tls/ca.crt" "https://localhost:$TLS_PORT/__sim/health" >/dev/null; }
wait_for "the TLS front" 15 tls_up
export APCA_API_DATA_URL="https://localhost:$TLS_PORT" BACKFILLD_CA_FILE="$T/tls/ca.crt"
GOOD_DB="host=localhost port=$P user=postgres dbname=backfilld sslmode=verify-full sslrootcert=$T/tls/ca.crt connect_timeout=5"
WRONG_DB="host=localhost port=$P user=postgres dbname=backfilld sslmode=verify-full sslrootcert=$T/tls/wrong-ca.crt connect_timeout=5"

BACKFILLD_DATABASE_URL=$GOOD_DB bf check-config --alpaca >"$T/cc.out" 2>&1 || { cat "$T/cc.out"; fail "check-config over TLS"; }
check_cmd "check-config: database and Alpaca over verified TLS" grep -q '^alpaca: ok' "$T/cc.out"

rc=0
BACKFILLD_DATABASE_URL=$WRONG_DB bf check-config >"$T/wrongdb.out" 2>&1 || rc=$?
check "a database certificate from another CA: exit 69" "69" "$rc"
check_cmd "  and the message says it is the certificate" grep -q 'certificate verify failed' "$T/wrongdb.out"
rc=0
BACKFILLD_DATABASE_URL=$GOOD_DB BACKFILLD_CA_FILE="$T/tls/wrong-ca.crt" bf check-config --alpaca >"$T/wrongapi.out" 2>&1 || rc=$?
check "an Alpaca certificate from another CA: exit 69" "69" "$rc"
check_cmd "  and the message says it is the certificate" grep -q 'SSL certificate problem' "$T/wrongapi.out"

# The daemon, all over TLS.
bf enqueue --symbols "AAPL,MSFT,NVDA" --timeframe h1 --from 2024-01-01 --to 2024-03-31 >/dev/null
export BACKFILLD_RATE_LIMIT=600000
BACKFILLD_DATABASE_URL=$GOOD_DB daemon_start d1 --until-idle
daemon_wait "$DAEMON_PID" 120
check "the daemon exits 0 over TLS" "0" "$DAEMON_RC"
check "every run succeeded" "9|9" "$(sql "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM job_runs")"
load_expected h1 --symbols AAPL,MSFT,NVDA --timeframe 1Hour --start "$(ny 2024-01-01)" --end "$(ny_end 2024-03-31)"
check_bars_exact

# The daemon with the wrong CA for the database: it says so, and keeps trying.
BACKFILLD_DATABASE_URL=$WRONG_DB daemon_start d2
wait_for "the refused certificate logged" 30 grep -q '"msg":"db connect failed"' "$T/d2.log"
check_cmd "the daemon says the database's certificate was refused" \
    grep -q '"msg":"db connect failed".*certificate verify failed' "$T/d2.log"
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 30

# The daemon with the wrong CA for Alpaca: a configuration problem, not the
# runs' fault. They go back to the queue without spending an attempt, and
# claiming pauses with a crit line that names the certificate.
bf enqueue --symbols TSLA --timeframe d1 --from 2024-01-01 --to 2024-01-31 >/dev/null
BACKFILLD_DATABASE_URL=$GOOD_DB BACKFILLD_CA_FILE="$T/tls/wrong-ca.crt" daemon_start d3
wait_for "the refused certificate logged" 30 grep -q '"msg":"alpaca TLS certificate refused; claiming paused"' "$T/d3.log"
check_cmd "the crit line says which certificate problem" \
    grep -q '"level":"crit","msg":"alpaca TLS certificate refused; claiming paused".*SSL certificate problem' "$T/d3.log"
wait_for "the run given back" 30 sql_eq "SELECT status FROM job_runs WHERE symbol = 'TSLA'" queued
check "no attempt spent, no run failed" "0|0" \
    "$(sql "SELECT (SELECT attempt FROM job_runs WHERE symbol = 'TSLA'), count(*) FILTER (WHERE status = 'failed') FROM job_runs")"
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 30
check "it stops cleanly" "0" "$DAEMON_RC"
finish
