-- Deletes events older than $1 seconds; returns how many.
with gone as (
    delete from auth.audit_events as e
    where e.at operator(pg_catalog.<) (pg_catalog.now() operator(pg_catalog.-) pg_catalog.make_interval(secs => $1))
    returning 1
)
select pg_catalog.count(*) from gone
