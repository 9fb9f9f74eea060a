-- backfilld schema, version 5: the server's own rate-limit window, shared.
--
-- Alpaca's successful responses carry X-RateLimit-Limit (requests per
-- minute), X-RateLimit-Remaining and X-RateLimit-Reset (epoch seconds, when
-- the quota changes; alpaca-bars-api.md section 6). A daemon passes the
-- freshest triple it has seen to take_rate_tokens (the 7-argument form), so
-- every host spends from what the server says is left rather than from its
-- own clock alone:
--
--   * the bucket refills at least(per_minute, the server's Limit): an
--     operator's UPDATE rate_limits SET per_minute can lower the rate, never
--     push it past what the server allows;
--   * until Reset, no more than Remaining requests go out, less those granted
--     since the request that saw it (grant_seq counts every token granted,
--     and each token carries its number, so an answer is placed exactly);
--     Remaining 0 makes every host wait until Reset;
--   * tokens granted in a window lapse guard_ms before its end, and none are
--     granted in those last guard_ms, so a request reaches the server inside
--     the window it was counted in;
--   * when the window ends before a new answer arrives, the next one is
--     assumed to be like the ones seen: window_ms (the shortest step seen
--     between two Reset values) long with window_cap (the most requests ever
--     seen left in a window, plus one) requests; an answer without the
--     headers, or with another Limit, makes all of this be learnt anew.
--
-- The bucket, the pause after a 429 and set_rate_limit stay as they were;
-- the 3-argument take_rate_tokens (older daemons, or by hand) now goes
-- through the same code with no observation, so it also respects a window
-- other hosts have seen.

ALTER TABLE rate_limits
    ADD COLUMN grant_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN server_per_minute double precision,
    ADD COLUMN window_reset timestamptz,
    ADD COLUMN window_remaining double precision,
    ADD COLUMN window_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN window_ms integer,
    ADD COLUMN window_last_reset timestamptz,
    ADD COLUMN window_cap double precision,
    ADD COLUMN guard_ms integer NOT NULL DEFAULT 20 CHECK (guard_ms BETWEEN 0 AND 10000);

COMMENT ON COLUMN rate_limits.grant_seq IS 'tokens granted so far, by every host; a token''s number places the answer to its request';
COMMENT ON COLUMN rate_limits.server_per_minute IS 'the last X-RateLimit-Limit seen: the bucket refills at least(per_minute, this)';
COMMENT ON COLUMN rate_limits.window_reset IS 'the last X-RateLimit-Reset seen (or predicted): the end of the server''s current window';
COMMENT ON COLUMN rate_limits.window_remaining IS 'requests that may still go out before window_reset';
COMMENT ON COLUMN rate_limits.window_seq IS 'grant_seq of the token whose answer last set window_remaining';
COMMENT ON COLUMN rate_limits.window_ms IS 'the shortest step seen between two Reset values: the window length';
COMMENT ON COLUMN rate_limits.window_last_reset IS 'the latest Reset seen in an answer (window_reset may be predicted or cleared)';
COMMENT ON COLUMN rate_limits.window_cap IS 'the most requests seen left in a window, plus one: what a new window holds';
COMMENT ON COLUMN rate_limits.guard_ms IS 'no token is granted, or used, in the last guard_ms of a window';

-- Grants up to p_want tokens now, after applying what a host saw in an answer
-- (p_obs_*: X-RateLimit-Limit, -Remaining, -Reset in epoch seconds, and the
-- number of the token the request was sent with; all NULL when it has seen
-- nothing new; p_obs_remaining -1 for an answer without the headers). seq is the number of the last token granted (the granted
-- ones are seq - granted + 1 .. seq); valid_ms is how long they may be used;
-- wait_ms is how long until the next one (0 when everything asked for was
-- granted); per_minute is the rate in force.
CREATE FUNCTION take_rate_tokens(p_name text, p_want integer, p_default_per_minute double precision,
                                 p_obs_limit double precision, p_obs_remaining integer,
                                 p_obs_reset bigint, p_obs_seq bigint)
RETURNS TABLE (granted integer, wait_ms integer, per_minute double precision, seq bigint,
               valid_ms integer)
LANGUAGE plpgsql AS $$
DECLARE
    r rate_limits;
    t timestamptz := clock_timestamp();
    obs_reset timestamptz;
    rate double precision;
    cap double precision;
    avail double precision;
    g integer;
    step double precision;
    windowed boolean;
    guard_at timestamptz;
    bucket_wait integer;
    window_wait integer := 0;
    valid integer := 1000;
BEGIN
    INSERT INTO rate_limits (name, per_minute, tokens, refreshed_at)
    VALUES (p_name, p_default_per_minute, 0, t) ON CONFLICT (name) DO NOTHING;
    SELECT * INTO r FROM rate_limits WHERE name = p_name FOR UPDATE;

    -- An answer without the headers (p_obs_remaining < 0): the server no
    -- longer says, so nothing learnt from it before holds any more.
    IF p_obs_remaining < 0 THEN
        r.server_per_minute := NULL;
        r.window_reset := NULL;
        r.window_remaining := NULL;
        r.window_ms := NULL;
        r.window_cap := NULL;
        r.window_last_reset := NULL;
    END IF;
    -- What the server said, placed by the number of the token it answered.
    -- Another Limit is another server (or plan): its windows are learnt anew.
    IF p_obs_limit > 0 THEN
        IF r.server_per_minute IS DISTINCT FROM p_obs_limit THEN
            r.window_ms := NULL;
            r.window_cap := NULL;
            r.window_last_reset := NULL;
        END IF;
        r.server_per_minute := p_obs_limit;
    END IF;
    IF p_obs_reset IS NOT NULL AND p_obs_remaining IS NOT NULL AND p_obs_seq IS NOT NULL
       AND p_obs_remaining >= 0 THEN
        obs_reset := to_timestamp(p_obs_reset);
        r.window_cap := greatest(coalesce(r.window_cap, 0), p_obs_remaining + 1);
        IF obs_reset > r.window_last_reset THEN
            step := extract(epoch FROM obs_reset - r.window_last_reset) * 1000;
            IF step <= 86400000 THEN
                r.window_ms := least(coalesce(r.window_ms, step::integer), step::integer);
            END IF;
        END IF;
        r.window_last_reset := greatest(r.window_last_reset, obs_reset);
        IF r.window_reset IS NULL OR obs_reset > r.window_reset THEN
            r.window_reset := obs_reset;
            r.window_remaining := p_obs_remaining - (r.grant_seq - p_obs_seq);
            r.window_seq := p_obs_seq;
        ELSIF obs_reset = r.window_reset AND p_obs_seq > r.window_seq THEN
            r.window_remaining := p_obs_remaining - (r.grant_seq - p_obs_seq);
            r.window_seq := p_obs_seq;
        END IF;
    END IF;

    -- A window that is over: the next one is like those seen, or unknown.
    IF r.window_reset IS NOT NULL AND r.window_reset <= t THEN
        IF r.window_ms IS NOT NULL AND r.window_cap IS NOT NULL THEN
            r.window_reset := r.window_reset + make_interval(secs => r.window_ms / 1000.0 *
                ceil(extract(epoch FROM t - r.window_reset) * 1000 / r.window_ms + 1e-9));
            r.window_remaining := r.window_cap;
            r.window_seq := r.grant_seq;
        ELSE
            r.window_reset := NULL;
            r.window_remaining := NULL;
        END IF;
    END IF;

    IF r.paused_until IS NOT NULL AND r.paused_until > t THEN
        UPDATE rate_limits SET server_per_minute = r.server_per_minute, window_reset = r.window_reset,
               window_remaining = r.window_remaining, window_seq = r.window_seq,
               window_ms = r.window_ms, window_cap = r.window_cap,
               window_last_reset = r.window_last_reset
         WHERE name = p_name;
        RETURN QUERY SELECT 0, ceil(extract(epoch FROM r.paused_until - t) * 1000)::integer,
            least(r.per_minute, coalesce(r.server_per_minute, r.per_minute)), r.grant_seq, 0;
        RETURN;
    END IF;

    -- The bucket, at the slower of the operator's rate and the server's.
    rate := least(r.per_minute, coalesce(r.server_per_minute, r.per_minute));
    cap := greatest(1.0, rate / 60.0);
    avail := least(cap, r.tokens + rate / 60.0 * greatest(0, extract(epoch FROM t - r.refreshed_at)));
    g := least(p_want, floor(avail))::integer;
    bucket_wait := CASE WHEN g >= p_want THEN 0
                        ELSE ceil((1.0 - (avail - g)) * 60000.0 / rate)::integer END;

    -- The window: no more than it has left, and nothing in its last guard_ms.
    windowed := r.window_reset IS NOT NULL;
    IF windowed THEN
        guard_at := r.window_reset - make_interval(secs => r.guard_ms / 1000.0);
        IF t >= guard_at THEN
            g := 0;
        ELSE
            g := least(g, greatest(0, floor(r.window_remaining)))::integer;
            valid := least(1000, floor(extract(epoch FROM guard_at - t) * 1000))::integer;
        END IF;
        IF g < p_want AND (t >= guard_at OR r.window_remaining - g < 1) THEN
            window_wait := ceil(extract(epoch FROM r.window_reset - t) * 1000)::integer + 1;
        END IF;
        r.window_remaining := r.window_remaining - g;
    END IF;

    UPDATE rate_limits
       SET tokens = avail - g, refreshed_at = t, grant_seq = r.grant_seq + g,
           server_per_minute = r.server_per_minute, window_reset = r.window_reset,
           window_remaining = r.window_remaining, window_seq = r.window_seq,
           window_ms = r.window_ms, window_cap = r.window_cap,
           window_last_reset = r.window_last_reset
     WHERE name = p_name;
    RETURN QUERY SELECT g, CASE WHEN g >= p_want THEN 0 ELSE greatest(bucket_wait, window_wait) END,
        rate, r.grant_seq + g, valid;
END
$$;

-- The 3-argument form of version 1 (older daemons, or by hand): the same
-- limits, with nothing observed; tokens it grants are for use at once.
CREATE OR REPLACE FUNCTION take_rate_tokens(p_name text, p_want integer, p_default_per_minute double precision)
RETURNS TABLE (granted integer, wait_ms integer, per_minute double precision)
LANGUAGE sql AS $$
    SELECT granted, wait_ms, per_minute
      FROM take_rate_tokens(p_name, p_want, p_default_per_minute, NULL, NULL, NULL, NULL)
$$;

-- As in version 2: the owner's rights, this schema first and pg_temp last,
-- and only the roles granted it may call the new function.
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'take_rate_tokens(text, integer, double precision)',
        'take_rate_tokens(text, integer, double precision, double precision, integer, bigint, bigint)']
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %I, pg_temp',
                       f, current_schema());
    END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION
    take_rate_tokens(text, integer, double precision, double precision, integer, bigint, bigint)
    FROM PUBLIC;
