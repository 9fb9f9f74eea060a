-- backfilld schema, version 7: proving the table complete, and keeping
-- adjusted history current after corporate actions (issue #14).
--
-- Written against version 6, where a series is (symbol, timeframe, feed,
-- adjustment), bars carry feed, adjustment, final and fetched_at, a bare
-- date is the America/New_York trading day and backfilld_ny_day(date) is
-- that day's New York midnight.
--
--  * trading_calendar: Alpaca's trading calendar (GET /v2/calendar), one row
--    per trading day, holidays absent, early closes as served. calendar_load
--    replaces a range of it from one answer, in one statement.
--  * ledger_days: per series (a fetch_historical definition) and trading
--    day, the bars the session allows, the bars stored, what a re-fetch
--    served when the day was last checked (ledger_checks), and the day's
--    class: complete, no_data (fetched, Alpaca had nothing), not_fetched,
--    hole (fewer stored than a re-fetch serves now), not_listed (before the
--    series' first bar), short (fewer than the session allows, not checked).
--  * corporate_actions: Alpaca's corporate actions (GET /v1/corporate-actions),
--    loaded from whole answers by corporate_actions_load; apply_corporate_actions
--    re-queues the history before the ex-date of every adjusted series the
--    action changes (never a raw one) and reports name changes against the
--    definitions they affect.
--  * backfilld_sync_state: when each sync last ran, succeeded or failed, and
--    ledger_summary: the totals of the last verify (what `status` shows).

-- --- the trading calendar -----------------------------------------------------------
CREATE TABLE trading_calendar (
    day             date PRIMARY KEY,        -- the New York trading day
    open            time NOT NULL,           -- regular session, New York local
    close           time NOT NULL,
    session_open    time NOT NULL,           -- extended session, New York local
    session_close   time NOT NULL,
    settlement_date date,
    loaded_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (close > open AND session_close > session_open)
);

-- One row per sync job: 'calendar', 'corporate_actions', 'verify'.
CREATE TABLE backfilld_sync_state (
    name         text PRIMARY KEY,
    last_run     timestamptz,
    last_ok      timestamptz,
    last_error   text,
    last_error_at timestamptz,
    window_from  date,
    window_to    date,
    detail       jsonb NOT NULL DEFAULT '{}'
);

-- Replaces the calendar's [p_from, p_to] with the days of p_body, Alpaca's
-- answer (a JSON array of {date, open, close, session_open, session_close,
-- settlement_date}); days of the body outside the range are ignored. An
-- answer that is not such an array raises an error naming the element, and
-- nothing is changed. Returns the number of days stored.
CREATE FUNCTION calendar_load(p_from date, p_to date, p_body jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    bad record;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'the calendar is not a JSON array (%)', coalesce(jsonb_typeof(p_body), 'null');
    END IF;
    SELECT i - 1 AS idx, e INTO bad
      FROM jsonb_array_elements(p_body) WITH ORDINALITY AS a(e, i)
     WHERE jsonb_typeof(e) IS DISTINCT FROM 'object'
        OR e->>'date' !~ '^\d{4}-\d{2}-\d{2}$'
        OR e->>'open' !~ '^\d{2}:\d{2}$' OR e->>'close' !~ '^\d{2}:\d{2}$'
        OR e->>'session_open' !~ '^\d{4}$' OR e->>'session_close' !~ '^\d{4}$'
        OR e->>'date' IS NULL OR e->>'open' IS NULL OR e->>'close' IS NULL
        OR e->>'session_open' IS NULL OR e->>'session_close' IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'calendar element % is not a trading day: %', bad.idx, left(bad.e::text, 200);
    END IF;
    DELETE FROM trading_calendar WHERE day BETWEEN p_from AND p_to;
    INSERT INTO trading_calendar (day, open, close, session_open, session_close, settlement_date)
    SELECT (e->>'date')::date, (e->>'open')::time, (e->>'close')::time,
           to_timestamp(e->>'session_open', 'HH24MI')::time,
           to_timestamp(e->>'session_close', 'HH24MI')::time,
           CASE WHEN e->>'settlement_date' ~ '^\d{4}-\d{2}-\d{2}$' THEN (e->>'settlement_date')::date END
      FROM jsonb_array_elements(p_body) AS e
     WHERE (e->>'date')::date BETWEEN p_from AND p_to
    ON CONFLICT (day) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO backfilld_sync_state (name, last_run, last_ok, window_from, window_to, detail)
    VALUES ('calendar', now(), now(), p_from, p_to, jsonb_build_object('days', n))
    ON CONFLICT (name) DO UPDATE
        SET last_run = now(), last_ok = now(), window_from = EXCLUDED.window_from,
            window_to = EXCLUDED.window_to, detail = EXCLUDED.detail;
    RETURN n;
END
$$;

-- A sync that failed: kept for status and the next look.
CREATE FUNCTION backfilld_sync_failed(p_name text, p_error text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO backfilld_sync_state (name, last_run, last_error, last_error_at)
    VALUES (p_name, now(), p_error, now())
    ON CONFLICT (name) DO UPDATE SET last_run = now(), last_error = EXCLUDED.last_error,
                                     last_error_at = now()
$$;

-- --- the ledger ---------------------------------------------------------------------
-- What a re-fetch served for a series' trading day when it was last checked.
CREATE TABLE ledger_checks (
    symbol     text NOT NULL,
    timeframe  text NOT NULL,
    feed       text NOT NULL,
    adjustment text NOT NULL,
    day        date NOT NULL,
    served     integer NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, feed, adjustment, day)
);

-- The totals of the last verify, for status.
CREATE TABLE ledger_summary (
    id          integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    verified_at timestamptz NOT NULL,
    source      text NOT NULL,           -- 'verify' (the command) or 'daemon' (the daily pass)
    range_from  date,
    range_to    date,
    series      integer NOT NULL,
    totals      jsonb NOT NULL,          -- days per class
    queued      integer NOT NULL DEFAULT 0
);

-- Bars one session allows for a timeframe: the bins of the timeframe's
-- length (aligned on the Unix epoch, as Alpaca stamps them) that meet the
-- extended session, IEX's system hours 08:00-17:00 for the iex feed; one for
-- d1. NULL for w1 and mn1 (not checked per day).
CREATE FUNCTION ledger_allowed(p_timeframe text, p_feed text, p_day date, p_open time, p_close time)
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_timeframe = 'd1' THEN 1
        WHEN p_timeframe IN ('w1', 'mn1') THEN NULL
        ELSE (SELECT (ceil(extract(epoch FROM c) / s) - floor(extract(epoch FROM o) / s))::integer
                FROM (SELECT ((p_day + CASE WHEN p_feed = 'iex' THEN greatest(p_open, time '08:00') ELSE p_open END)
                              AT TIME ZONE 'America/New_York') AS o,
                             ((p_day + CASE WHEN p_feed = 'iex' THEN least(p_close, time '17:00') ELSE p_close END)
                              AT TIME ZONE 'America/New_York') AS c,
                             CASE p_timeframe WHEN 'm1' THEN 60 WHEN 'm5' THEN 300 WHEN 'm15' THEN 900
                                              WHEN 'm30' THEN 1800 WHEN 'h1' THEN 3600 ELSE 14400 END AS s) x
               WHERE c > o)
    END
$$;

-- Per series and trading day of [p_from, p_to] (NULL: each definition's
-- whole range), the ledger. Only whole days that have ended count, and only
-- fetch_historical definitions of m1..h4 and d1. Order: definition, day.
CREATE FUNCTION ledger_days(p_symbols text[] DEFAULT NULL, p_timeframe text DEFAULT NULL,
                            p_from date DEFAULT NULL, p_to date DEFAULT NULL)
RETURNS TABLE (job_def_id bigint, symbol text, timeframe text, feed text, adjustment text,
               day date, day_start timestamptz, day_end timestamptz, allowed integer,
               stored integer, served integer, checked_at timestamptz, first_bar timestamptz,
               class text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    folded boolean;
BEGIN
    -- Coverage is read below: bring it up to date first, as enqueue_ranges
    -- does. If a scheduler is folding it right now, the runs that succeeded
    -- since are read too (in the range only: a definition may have thousands).
    folded := pg_try_advisory_xact_lock(hashtext('backfilld.schedule_due_jobs'));
    IF folded THEN
        PERFORM backfilld_fold_coverage();
    END IF;
    -- Per series, everything is read for that series alone (its bars by the
    -- primary key, its checks by theirs, its days from the calendar), so the
    -- cost is one index range scan per series and grows with the bars read,
    -- never with the product of series and days.
    RETURN QUERY
    WITH s AS MATERIALIZED (
        SELECT d.id, d.symbol, d.timeframe, d.feed, d.adjustment,
               greatest(d.backfill_from, backfilld_ny_day(p_from)) AS lo,
               least(coalesce(d.backfill_to, now()), now(), backfilld_ny_day(p_to + 1)) AS hi,
               coalesce(c.covered, '{}'::tstzmultirange)
                 + CASE WHEN folded THEN '{}'::tstzmultirange
                        ELSE coalesce((SELECT range_agg(tstzrange(r.range_start, r.range_end))
                                         FROM job_runs r
                                        WHERE r.job_def_id = d.id AND r.status = 'succeeded'
                                          AND (r.symbol, r.timeframe, r.feed, r.adjustment)
                                              = (d.symbol, d.timeframe, d.feed, d.adjustment)
                                          AND r.range_start < least(coalesce(d.backfill_to, now()), now(),
                                                                    backfilld_ny_day(p_to + 1))
                                          AND r.range_end > greatest(d.backfill_from, backfilld_ny_day(p_from))),
                                      '{}'::tstzmultirange) END AS covered,
               (SELECT min(b.ts) FROM bars b
                 WHERE (b.symbol, b.timeframe, b.feed, b.adjustment)
                       = (d.symbol, d.timeframe, d.feed, d.adjustment)) AS first_ts
          FROM job_definitions d LEFT JOIN job_coverage c ON c.job_def_id = d.id
         WHERE d.job_type = 'fetch_historical' AND d.backfill_from IS NOT NULL
           AND d.timeframe NOT IN ('w1', 'mn1')
           AND (p_symbols IS NULL OR d.symbol = ANY (p_symbols))
           AND (p_timeframe IS NULL OR d.timeframe = p_timeframe)),
    -- The sessions of the range, with the bars each allows, per timeframe and feed in use.
    cal AS MATERIALIZED (
        SELECT k.timeframe, k.feed, c.day, backfilld_ny_day(c.day) AS ds,
               backfilld_ny_day(c.day + 1) AS de,
               ledger_allowed(k.timeframe, k.feed, c.day, c.session_open, c.session_close) AS allowed
          FROM (SELECT DISTINCT s.timeframe, s.feed FROM s) k, trading_calendar c
         WHERE c.day >= (SELECT (min(s.lo) AT TIME ZONE 'America/New_York')::date FROM s)
           AND c.day <= (SELECT (max(s.hi) AT TIME ZONE 'America/New_York')::date FROM s))
    SELECT s.id, s.symbol, s.timeframe, s.feed, s.adjustment, x.day, x.ds, x.de, x.allowed,
           x.n, x.served, x.checked_at, s.first_ts,
           CASE
               WHEN NOT s.covered @> tstzrange(x.ds, x.de) THEN 'not_fetched'
               WHEN s.first_ts IS NULL THEN 'no_data'
               WHEN x.de <= s.first_ts THEN 'not_listed'
               WHEN x.served IS NOT NULL AND x.n < x.served THEN 'hole'
               WHEN x.n = 0 THEN 'no_data'
               WHEN x.n >= x.allowed THEN 'complete'
               WHEN x.served IS NOT NULL THEN 'complete'
               ELSE 'short'
           END
      FROM s, LATERAL (
        SELECT cal.day, cal.ds, cal.de, cal.allowed, coalesce(st.n, 0) AS n, lc.served, lc.checked_at
          FROM cal
          LEFT JOIN (SELECT (b.ts AT TIME ZONE 'America/New_York')::date AS sday, count(*)::integer AS n
                       FROM bars b
                      WHERE (b.symbol, b.timeframe, b.feed, b.adjustment)
                            = (s.symbol, s.timeframe, s.feed, s.adjustment)
                        AND b.ts >= s.lo AND b.ts < s.hi
                      GROUP BY 1) st ON st.sday = cal.day
          LEFT JOIN (SELECT l.day, l.served, l.checked_at FROM ledger_checks l
                      WHERE (l.symbol, l.timeframe, l.feed, l.adjustment)
                            = (s.symbol, s.timeframe, s.feed, s.adjustment)) lc ON lc.day = cal.day
         WHERE cal.timeframe = s.timeframe AND cal.feed = s.feed
           AND cal.ds >= s.lo AND cal.de <= s.hi) x
     WHERE s.hi > s.lo
     ORDER BY s.id, x.day;
END
$$;

-- Its one good plan: per series, hash joins of that series' few hundred
-- days (a nested loop over days x day counts costs series x days^2); no JIT
-- (the penalty on nested loops makes the estimate look huge); the final sort
-- in memory.
ALTER FUNCTION ledger_days(text[], text, date, date)
    SET enable_nestloop = off SET jit = off SET work_mem = '64MB';

-- Records what re-fetches served: parallel arrays, one element per series-day.
CREATE FUNCTION ledger_record_checks(p_symbols text[], p_timeframes text[], p_feeds text[],
                                     p_adjustments text[], p_days date[], p_served integer[])
RETURNS integer LANGUAGE sql AS $$
    WITH u AS (
        INSERT INTO ledger_checks (symbol, timeframe, feed, adjustment, day, served, checked_at)
        SELECT * , now() FROM unnest(p_symbols, p_timeframes, p_feeds, p_adjustments, p_days, p_served)
        ON CONFLICT (symbol, timeframe, feed, adjustment, day)
            DO UPDATE SET served = EXCLUDED.served, checked_at = EXCLUDED.checked_at
        RETURNING 1)
    SELECT count(*)::integer FROM u
$$;

-- Queues the (definition, day) pairs again, forced: each run of consecutive
-- trading days of a definition as one range, from the first day's New York
-- midnight to the one after the last day (enqueue_ranges cuts it into
-- chunks). Returns the number of runs queued.
CREATE FUNCTION ledger_refetch(p_def_ids bigint[], p_days date[]) RETURNS integer
LANGUAGE sql AS $$
    WITH u AS (SELECT DISTINCT def_id, day FROM unnest(p_def_ids, p_days) AS u(def_id, day)),
    k AS (SELECT u.def_id, u.day,
                 c.k - row_number() OVER (PARTITION BY u.def_id ORDER BY u.day) AS island
            FROM u JOIN (SELECT day, row_number() OVER (ORDER BY day) AS k
                           FROM trading_calendar
                          WHERE day BETWEEN (SELECT min(day) FROM u) AND (SELECT max(day) FROM u)) c
              ON c.day = u.day),
    q AS (SELECT enqueue_ranges(ARRAY[def_id], backfilld_ny_day(min(day)),
                                backfilld_ny_day(max(day) + 1), p_force => true) AS n
            FROM k GROUP BY def_id, island)
    SELECT coalesce(sum(n), 0)::integer FROM q
$$;

CREATE FUNCTION ledger_save_summary(p_source text, p_from date, p_to date, p_series integer,
                                    p_totals jsonb, p_queued integer) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO ledger_summary (id, verified_at, source, range_from, range_to, series, totals, queued)
    VALUES (1, now(), p_source, p_from, p_to, p_series, p_totals, p_queued)
    ON CONFLICT (id) DO UPDATE
        SET verified_at = EXCLUDED.verified_at, source = EXCLUDED.source,
            range_from = EXCLUDED.range_from, range_to = EXCLUDED.range_to,
            series = EXCLUDED.series, totals = EXCLUDED.totals, queued = EXCLUDED.queued
$$;

-- --- corporate actions ------------------------------------------------------------------
CREATE TABLE corporate_actions (
    id           text PRIMARY KEY,           -- Alpaca's id
    ca_type      text NOT NULL,              -- forward_split, cash_dividend, name_change, ...
    symbol       text NOT NULL,              -- the symbol it is about (a name change: the old one)
    new_symbol   text,                       -- name_change: the new symbol
    old_rate     double precision,
    new_rate     double precision,
    rate         double precision,           -- cash_dividend
    process_date date,
    ex_date      date,
    record_date  date,
    payable_date date,
    body         jsonb NOT NULL,             -- the record as served
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    applied_at   timestamptz                 -- apply_corporate_actions looked at it
);
CREATE INDEX corporate_actions_pending ON corporate_actions (first_seen) WHERE applied_at IS NULL;
CREATE INDEX corporate_actions_symbol ON corporate_actions (symbol);

-- What an action did to which definition.
CREATE TABLE corporate_action_effects (
    action_id  text NOT NULL REFERENCES corporate_actions (id) ON DELETE CASCADE,
    job_def_id bigint NOT NULL,
    effect     text NOT NULL CHECK (effect IN ('requeued', 'name_change')),
    runs       integer NOT NULL DEFAULT 0,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (action_id, job_def_id, effect)
);

-- Loads one answer of GET /v1/corporate-actions ({"corporate_actions":
-- {"forward_splits": [...], ...}, "next_page_token": ...}). A record seen
-- again is updated (last_seen) and keeps its first_seen. Returns the number
-- of records in the answer and how many were new; raises an error naming
-- what is wrong with an answer of another shape, and then nothing is loaded.
CREATE FUNCTION corporate_actions_load(p_body jsonb, OUT records integer, OUT added integer)
LANGUAGE plpgsql AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    IF jsonb_typeof(p_body) IS DISTINCT FROM 'object'
       OR jsonb_typeof(p_body->'corporate_actions') NOT IN ('object', 'null') THEN
        RAISE EXCEPTION 'not a corporate-actions answer (no "corporate_actions" object)';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(coalesce(nullif(p_body->'corporate_actions', 'null'), '{}'))
    LOOP
        IF jsonb_typeof(v) NOT IN ('array', 'null') THEN
            RAISE EXCEPTION 'corporate_actions.% is not an array', k;
        END IF;
        IF EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(nullif(v, 'null'), '[]')) e
                    WHERE jsonb_typeof(e) <> 'object'
                       OR coalesce(e->>'symbol', e->>'old_symbol', e->>'source_symbol',
                                   e->>'target_symbol', e->>'acquiree_symbol') IS NULL) THEN
            RAISE EXCEPTION 'corporate_actions.%: a record without a symbol', k;
        END IF;
    END LOOP;
    WITH rec AS (
        SELECT coalesce(e->>'id', md5(kv.key || e::text)) AS id,
               regexp_replace(kv.key, 's$', '') AS ca_type,
               coalesce(e->>'symbol', e->>'old_symbol', e->>'source_symbol', e->>'target_symbol',
                        e->>'acquiree_symbol') AS symbol,
               e->>'new_symbol' AS new_symbol,
               CASE WHEN jsonb_typeof(e->'old_rate') = 'number' THEN (e->>'old_rate')::float8 END AS old_rate,
               CASE WHEN jsonb_typeof(e->'new_rate') = 'number' THEN (e->>'new_rate')::float8 END AS new_rate,
               CASE WHEN jsonb_typeof(e->'rate') = 'number' THEN (e->>'rate')::float8 END AS rate,
               CASE WHEN e->>'process_date' ~ '^\d{4}-\d{2}-\d{2}$' THEN (e->>'process_date')::date END AS process_date,
               CASE WHEN e->>'ex_date' ~ '^\d{4}-\d{2}-\d{2}$' THEN (e->>'ex_date')::date END AS ex_date,
               CASE WHEN e->>'record_date' ~ '^\d{4}-\d{2}-\d{2}$' THEN (e->>'record_date')::date END AS record_date,
               CASE WHEN e->>'payable_date' ~ '^\d{4}-\d{2}-\d{2}$' THEN (e->>'payable_date')::date END AS payable_date,
               e AS body
          FROM jsonb_each(coalesce(nullif(p_body->'corporate_actions', 'null'), '{}')) AS kv,
               jsonb_array_elements(coalesce(nullif(kv.value, 'null'), '[]')) AS e),
    up AS (
        INSERT INTO corporate_actions AS ca (id, ca_type, symbol, new_symbol, old_rate, new_rate, rate,
                                             process_date, ex_date, record_date, payable_date, body)
        SELECT DISTINCT ON (id) * FROM rec
        ON CONFLICT (id) DO UPDATE
            SET last_seen = now(), body = EXCLUDED.body, ex_date = EXCLUDED.ex_date,
                process_date = EXCLUDED.process_date, old_rate = EXCLUDED.old_rate,
                new_rate = EXCLUDED.new_rate, rate = EXCLUDED.rate
        RETURNING (xmax = 0) AS is_new)
    SELECT count(*)::integer, count(*) FILTER (WHERE is_new)::integer INTO records, added FROM up;
END
$$;

-- Which adjustments an action type changes (Alpaca's adjustment values).
CREATE FUNCTION corporate_action_adjustments(p_type text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_type IN ('forward_split', 'reverse_split', 'unit_split', 'stock_dividend') THEN ARRAY['split', 'all']
        WHEN p_type = 'cash_dividend' THEN ARRAY['dividend', 'all']
        WHEN p_type = 'spin_off' THEN ARRAY['spin-off', 'all']
        ELSE ARRAY[]::text[]
    END
$$;

-- Acts on every action not looked at yet (at most p_limit, oldest first):
-- an action that changes an adjustment re-queues, forced, each
-- fetch_historical definition of its symbol with that adjustment (or 'all';
-- never 'raw') that has bars before the ex-date fetched before the action
-- was first seen, from its backfill_from to the ex-date's New York midnight;
-- a name change is reported for the definitions of the old or the new
-- symbol. Returns one row per effect; the actions are marked looked at.
CREATE FUNCTION apply_corporate_actions(p_limit integer DEFAULT 1000)
RETURNS TABLE (action_id text, ca_type text, symbol text, new_symbol text, ex_date date,
               process_date date, job_def_id bigint, def_symbol text, timeframe text,
               adjustment text, effect text, runs integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    a corporate_actions;
    d job_definitions;
    ex timestamptz;
    n integer;
BEGIN
    FOR a IN SELECT * FROM corporate_actions ca WHERE ca.applied_at IS NULL
              ORDER BY ca.first_seen, ca.id LIMIT p_limit FOR UPDATE SKIP LOCKED
    LOOP
        IF a.ca_type = 'name_change' THEN
            FOR d IN SELECT * FROM job_definitions j
                      WHERE j.symbol IN (a.symbol, a.new_symbol) ORDER BY j.id
            LOOP
                INSERT INTO corporate_action_effects (action_id, job_def_id, effect)
                VALUES (a.id, d.id, 'name_change') ON CONFLICT DO NOTHING;
                RETURN QUERY SELECT a.id, a.ca_type, a.symbol, a.new_symbol, a.ex_date, a.process_date,
                                    d.id, d.symbol, d.timeframe, d.adjustment, 'name_change'::text, 0;
            END LOOP;
        ELSIF a.ex_date IS NOT NULL AND cardinality(corporate_action_adjustments(a.ca_type)) > 0 THEN
            ex := backfilld_ny_day(a.ex_date);
            FOR d IN SELECT * FROM job_definitions j
                      WHERE j.symbol = a.symbol AND j.job_type = 'fetch_historical'
                        AND j.backfill_from IS NOT NULL AND j.backfill_from < ex
                        AND string_to_array(j.adjustment, ',') && corporate_action_adjustments(a.ca_type)
                        AND EXISTS (SELECT 1 FROM bars b
                                     WHERE (b.symbol, b.timeframe, b.feed, b.adjustment)
                                           = (j.symbol, j.timeframe, j.feed, j.adjustment)
                                       AND b.ts < ex
                                       AND (b.fetched_at IS NULL OR b.fetched_at < a.first_seen))
                      ORDER BY j.id
            LOOP
                n := enqueue_ranges(ARRAY[d.id], d.backfill_from,
                                    least(ex, coalesce(d.backfill_to, ex)), p_force => true);
                INSERT INTO corporate_action_effects (action_id, job_def_id, effect, runs)
                VALUES (a.id, d.id, 'requeued', n)
                ON CONFLICT (action_id, job_def_id, effect) DO UPDATE
                    SET runs = corporate_action_effects.runs + EXCLUDED.runs, at = now();
                RETURN QUERY SELECT a.id, a.ca_type, a.symbol, a.new_symbol, a.ex_date, a.process_date,
                                    d.id, d.symbol, d.timeframe, d.adjustment, 'requeued'::text, n;
            END LOOP;
        END IF;
        UPDATE corporate_actions SET applied_at = now() WHERE id = a.id;
    END LOOP;
END
$$;

-- The name changes that affect a definition, for reports.
CREATE VIEW corporate_action_name_changes AS
    SELECT ca.id AS action_id, ca.symbol AS old_symbol, ca.new_symbol, ca.process_date,
           e.job_def_id, j.symbol AS def_symbol, j.timeframe, j.enabled
      FROM corporate_actions ca
      JOIN corporate_action_effects e ON e.action_id = ca.id AND e.effect = 'name_change'
      LEFT JOIN job_definitions j ON j.id = e.job_def_id;

CREATE FUNCTION corporate_actions_synced(p_from date, p_to date, p_records integer, p_added integer,
                                         p_pages integer) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO backfilld_sync_state (name, last_run, last_ok, window_from, window_to, detail)
    VALUES ('corporate_actions', now(), now(), p_from, p_to,
            jsonb_build_object('records', p_records, 'added', p_added, 'pages', p_pages))
    ON CONFLICT (name) DO UPDATE
        SET last_run = now(), last_ok = now(), window_from = EXCLUDED.window_from,
            window_to = EXCLUDED.window_to, detail = EXCLUDED.detail
$$;

-- Functions a daemon role calls run with the owner's rights on a pinned
-- search_path, and PUBLIC may not call them (as in versions 2 and 4).
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'calendar_load(date, date, jsonb)',
        'backfilld_sync_failed(text, text)',
        'ledger_days(text[], text, date, date)',
        'ledger_record_checks(text[], text[], text[], text[], date[], integer[])',
        'ledger_refetch(bigint[], date[])',
        'ledger_save_summary(text, date, date, integer, jsonb, integer)',
        'corporate_actions_load(jsonb)',
        'apply_corporate_actions(integer)',
        'corporate_actions_synced(date, date, integer, integer, integer)']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %I, pg_temp',
                       f, current_schema());
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    FOREACH f IN ARRAY ARRAY[
        'ledger_allowed(text, text, date, time, time)',
        'corporate_action_adjustments(text)']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
    END LOOP;
END
$$;

-- A sync job that succeeded (the ledger's daily pass), for status and the next look.
CREATE FUNCTION backfilld_sync_ok(p_name text, p_from date, p_to date, p_detail jsonb) RETURNS void
LANGUAGE sql SECURITY DEFINER AS $$
    INSERT INTO backfilld_sync_state (name, last_run, last_ok, window_from, window_to, detail)
    VALUES (p_name, now(), now(), p_from, p_to, coalesce(p_detail, '{}'))
    ON CONFLICT (name) DO UPDATE
        SET last_run = now(), last_ok = now(), window_from = EXCLUDED.window_from,
            window_to = EXCLUDED.window_to, detail = EXCLUDED.detail
$$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION backfilld_sync_ok(text, date, date, jsonb) SET search_path = %I, pg_temp',
                   current_schema());
END
$$;
REVOKE EXECUTE ON FUNCTION backfilld_sync_ok(text, date, date, jsonb) FROM PUBLIC;
