-- Deletes events older than $1 seconds, and forgets devices and networks last seen before
-- then; returns how many events.
with forgotten as (
    delete from auth.known_sign_ins as k
    where k.last_seen_at operator(pg_catalog.<) (pg_catalog.now() operator(pg_catalog.-) pg_catalog.make_interval(secs => $1))
), gone as (
    delete from auth.audit_events as e
    where e.at operator(pg_catalog.<) (pg_catalog.now() operator(pg_catalog.-) pg_catalog.make_interval(secs => $1))
    returning 1
)
select pg_catalog.count(*) from gone
