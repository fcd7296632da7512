-- A refresh: $1 session, $2 whether to advance the counter (rotate) and remember when the
-- current token was superseded (the last 16 are kept), $3 user agent, $4 ip (NULL: keep),
-- $5 whether a rule asks the session to step up. Returns the counter and whether the session
-- must step up.
update auth.sessions as s
set refresh_counter = s.refresh_counter operator(pg_catalog.+) case when $2 then 1 else 0 end,
    superseded_at = case when $2
        then (s.superseded_at operator(pg_catalog.||) pg_catalog.clock_timestamp())[
                 greatest(1, pg_catalog.cardinality(s.superseded_at) operator(pg_catalog.-) 14) :]
        else s.superseded_at end,
    refreshed_at = pg_catalog.clock_timestamp(),
    updated_at = pg_catalog.clock_timestamp(),
    user_agent = coalesce($3, s.user_agent),
    ip = coalesce($4, s.ip),
    reauth_required = s.reauth_required or $5
where s.id operator(pg_catalog.=) $1
returning s.refresh_counter, s.reauth_required
