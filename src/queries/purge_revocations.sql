-- Deletes revocations two hours (twice the largest leeway) past their expiry; returns how
-- many.
with sessions as (
    delete from auth.revoked_sessions
    where expires_at operator(pg_catalog.<) (pg_catalog.now() operator(pg_catalog.-) interval '2 hours')
    returning 1
), users as (
    delete from auth.revoked_users
    where expires_at operator(pg_catalog.<) (pg_catalog.now() operator(pg_catalog.-) interval '2 hours')
    returning 1
), tokens as (
    delete from auth.revoked_tokens
    where expires_at operator(pg_catalog.<) (pg_catalog.now() operator(pg_catalog.-) interval '2 hours')
    returning 1
)
select (select pg_catalog.count(*) from sessions)
       operator(pg_catalog.+) (select pg_catalog.count(*) from users)
       operator(pg_catalog.+) (select pg_catalog.count(*) from tokens)
