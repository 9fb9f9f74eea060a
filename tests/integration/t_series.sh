#!/usr/bin/env bash
# A series is (symbol, timeframe, feed, adjustment), and each is stored as its
# own: IEX and SIP bars of one symbol never overwrite each other.
#  1. The reproduction: after an iex backfill, `enqueue --feed sip` of the
#     same range answered "0 runs, covered" and the table kept IEX prices.
#     Now it fetches the SIP series, and both equal the simulator's.
#  2. A definition switched to another feed while its runs are still queued:
#     those runs go, and the new series' chunks are queued instead.
#  3. The README's example: a historical sip and an intraday iex definition
#     of one symbol keep two series where they overlap, each exact.
. "$(dirname "$0")/lib.sh"

pg_start
sim_start --settle-seconds 2
bf migrate >/dev/null
export BACKFILLD_RATE_LIMIT=600000 BACKFILLD_SETTLE_SECONDS=5 BACKFILLD_SIP_REALTIME=true
T_START=$(sql "SELECT now()")

# feed_diff FEED: bars of that feed (and symbols of expected_bars) not equal to expected_bars, both ways.
feed_diff() {
    sql "SELECT (SELECT count(*) FROM (
            SELECT symbol, ts, open, high, low, close, volume, trade_count, vwap FROM expected_bars
            EXCEPT SELECT symbol, ts, open, high, low, close, volume, trade_count, vwap FROM bars
                    WHERE feed = '$1' AND symbol IN (SELECT symbol FROM expected_bars) ${2:+AND $2}) a)
          + (SELECT count(*) FROM (
            SELECT symbol, ts, open, high, low, close, volume, trade_count, vwap FROM bars
             WHERE feed = '$1' AND symbol IN (SELECT symbol FROM expected_bars) ${2:+AND $2}
            EXCEPT SELECT symbol, ts, open, high, low, close, volume, trade_count, vwap FROM expected_bars) b)"
}
until_idle() {
    daemon_start "$1" --until-idle
    daemon_wait "$DAEMON_PID" 120
    check "$1: daemon exits 0" "0" "$DAEMON_RC"
}

# --- 1. iex, then sip ---------------------------------------------------------------
bf enqueue --symbols AAPL --timeframe h1 --feed iex --from 2024-01-02 --to 2024-02-29 >/dev/null
until_idle d1
bf enqueue --symbols AAPL --timeframe h1 --feed sip --from 2024-01-02 --to 2024-02-29 >"$T/enqueue2.out"
check "switching to sip queues the sip series, not 'covered'" "queued 2 runs" \
    "$(grep -o '^queued [0-9]* runs' "$T/enqueue2.out")"
check "the definition says sip" "sip" "$(sql "SELECT feed FROM job_definitions WHERE symbol = 'AAPL'")"
until_idle d2
check "both series are stored" "iex|raw|$(sql "SELECT count(*) FROM bars WHERE feed = 'iex'") sip|raw|$(sql "SELECT count(*) FROM bars WHERE feed = 'sip'")" \
    "$(sql "SELECT string_agg(feed || '|' || adjustment || '|' || n, ' ' ORDER BY feed)
              FROM (SELECT feed, adjustment, count(*) AS n FROM bars GROUP BY 1, 2) x")"
load_expected h1 --symbols AAPL --timeframe 1Hour --feed iex --start "$(ny 2024-01-02)" --end "$(ny_end 2024-02-29)"
check "the iex series equals the simulator's iex bars" "0" "$(feed_diff iex)"
load_expected h1 --symbols AAPL --timeframe 1Hour --feed sip --start "$(ny 2024-01-02)" --end "$(ny_end 2024-02-29)"
check "the sip series equals the simulator's sip bars" "0" "$(feed_diff sip)"
check "where both have a bar, no iex bar carries sip's close and volume" "0" \
    "$(sql "SELECT count(*) FROM bars i JOIN bars s USING (symbol, timeframe, ts)
             WHERE i.feed = 'iex' AND s.feed = 'sip' AND (i.close, i.volume) = (s.close, s.volume)")"
check "and they do overlap" "t" \
    "$(sql "SELECT count(*) > 100 FROM bars i JOIN bars s USING (symbol, timeframe, ts) WHERE i.feed = 'iex' AND s.feed = 'sip'")"
check "every bar says its feed, adjustment and when it was fetched" "0" \
    "$(sql "SELECT count(*) FROM bars WHERE fetched_at IS NULL OR fetched_at < '$T_START' OR fetched_at > now()")"
check "the schema refuses a feed that is not one" "ERROR" \
    "$(psql -XAtq -c "INSERT INTO bars (symbol, timeframe, feed, ts, open, high, low, close, volume, trade_count, vwap)
                      VALUES ('AAPL', 'h1', 'IEX', now(), 1, 1, 1, 1, 1, 1, 1)" 2>&1 | grep -o '^ERROR' || true)"

# --- 2. the feed changes while runs are queued ----------------------------------
bf enqueue --symbols MSFT --timeframe h1 --feed iex --from 2024-01-01 --to 2024-12-31 >/dev/null
check "12 iex runs queued" "iex|12" "$(sql "SELECT feed, count(*) FROM job_runs WHERE symbol = 'MSFT' AND status = 'queued' GROUP BY 1")"
# One of them is being fetched when the feed changes (a worker claimed it).
CLAIMED=$(sql "SELECT id || '|' || attempt FROM claim_queued_job('w-old', 1, 60)")
sql "UPDATE job_definitions SET feed = 'sip' WHERE symbol = 'MSFT'" >/dev/null
check "the old series' queued runs are gone, the running one cancelled" "cancelled|1" \
    "$(sql "SELECT string_agg(status, ','), count(*) FROM job_runs WHERE symbol = 'MSFT'")"
check "saying why" "1" "$(sql "SELECT count(*) FROM job_runs WHERE symbol = 'MSFT' AND last_error LIKE '%series changed to MSFT/h1/sip/raw%'")"
check "its worker can no longer complete it" "0" \
    "$(sql "SELECT count(*) FROM complete_job_runs('w-old', ARRAY[${CLAIMED%|*}]::bigint[], ARRAY[${CLAIMED#*|}], ARRAY[0]::bigint[], ARRAY[1])")"
sql "SELECT schedule_due_jobs()" >/dev/null
check "the scheduler queues all 12 chunks of the new series, the one that was running too" "sip|12" \
    "$(sql "SELECT feed, count(*) FROM job_runs WHERE symbol = 'MSFT' AND status = 'queued' GROUP BY 1")"
check "and none is covered" "{}" \
    "$(sql "SELECT covered FROM job_coverage c JOIN job_definitions d ON d.id = c.job_def_id WHERE d.symbol = 'MSFT'")"
sql "DELETE FROM job_definitions WHERE symbol = 'MSFT'" >/dev/null

# --- 3. historical sip and intraday iex of one symbol, overlapping -----------------
FROM=$(date -u -d '-30 min' +%Y-%m-%dT%H:%M:00Z)
bf enqueue --symbols XXC --timeframe m1 --feed sip --from "$FROM" >/dev/null
sql "INSERT INTO job_definitions (symbol, timeframe, job_type, feed, refresh_interval, lookback)
     VALUES ('XXC', 'm1', 'fetch_intraday', 'iex', '2 seconds', '30 minutes')" >/dev/null
export BACKFILLD_SCHEDULE_INTERVAL_MS=500 BACKFILLD_POLL_INTERVAL_MS=200
daemon_start d3
wait_for "historical sip done" 60 sql_eq "SELECT count(*) FROM job_runs WHERE symbol = 'XXC' AND job_type = 'fetch_historical' AND status <> 'succeeded'" 0
wait_for "three intraday iex runs done" 60 sql_ge "SELECT count(*) FROM job_runs WHERE symbol = 'XXC' AND job_type = 'fetch_intraday' AND status = 'succeeded'" 3
kill -TERM "$DAEMON_PID"
daemon_wait "$DAEMON_PID" 60
check "d3 exits 0" "0" "$DAEMON_RC"
SIP_END=$(sql "SELECT to_char(max(range_end) AT TIME ZONE 'UTC' - interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM job_runs WHERE symbol = 'XXC' AND feed = 'sip'")
load_expected m1 --symbols XXC --timeframe 1Min --feed sip --start "$FROM" --end "$SIP_END"
check "XXC sip: exactly the simulator's sip bars" "0" "$(feed_diff sip)"
check "XXC sip: all of them" "$(sql "SELECT count(*) FROM expected_bars")" "$(sql "SELECT count(*) FROM bars WHERE symbol = 'XXC' AND feed = 'sip'")"
IEX_END=$(sql "SELECT to_char(max(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM bars WHERE symbol = 'XXC' AND feed = 'iex' AND final")
IEX_START=$(sql "SELECT to_char(min(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM bars WHERE symbol = 'XXC' AND feed = 'iex'")
load_expected m1 --symbols XXC --timeframe 1Min --feed iex --start "$IEX_START" --end "$IEX_END"
check "XXC iex: every final bar is the simulator's iex bar" "0" "$(feed_diff iex "final AND ts <= '$IEX_END'")"
check "the two overlap for most of the half hour, each its own" "t" \
    "$(sql "SELECT count(*) >= 10 FROM bars i JOIN bars s USING (symbol, timeframe, ts)
             WHERE i.symbol = 'XXC' AND i.feed = 'iex' AND s.feed = 'sip'")"
finish
