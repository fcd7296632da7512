-- Deletes sessions that ended (or were revoked), or expired (past not_after, the timebox $2
-- or the inactivity timeout $3, in seconds, each NULL when off), more than $1 seconds ago,
-- recording each expired one that had not ended as a session_expired event by role $4.
-- Returns how many.
with gone as (
    delete from auth.sessions as s
    where least(s.ended_at,
                (select r.revoked_at from auth.revoked_sessions as r
                 where r.session_id operator(pg_catalog.=) s.id),
                s.not_after,
                s.created_at operator(pg_catalog.+) pg_catalog.make_interval(secs => $2),
                coalesce(s.refreshed_at, s.created_at) operator(pg_catalog.+) pg_catalog.make_interval(secs => $3))
          operator(pg_catalog.<) (pg_catalog.now() operator(pg_catalog.-) pg_catalog.make_interval(secs => $1))
    returning s.id, s.user_id, s.issuer, s.ip, s.user_agent, s.ended_at,
              exists (select from auth.revoked_sessions as r where r.session_id operator(pg_catalog.=) s.id) as revoked
), expired as (
    insert into auth.audit_events (event, user_id, issuer, session_id, ip, user_agent, details)
    select 'session_expired', g.user_id, g.issuer, g.id, g.ip, g.user_agent,
           pg_catalog.jsonb_build_object('by', $4::pg_catalog.regrole::pg_catalog.text)
    from gone as g
    where g.ended_at is null and not g.revoked
)
select pg_catalog.count(*) from gone
