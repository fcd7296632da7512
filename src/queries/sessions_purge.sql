-- Deletes sessions that ended (or were revoked), or expired (past not_after, the timebox $2
-- or the inactivity timeout $3, in seconds, each NULL when off), more than $1 seconds ago.
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
    returning 1
)
select pg_catalog.count(*) from gone
