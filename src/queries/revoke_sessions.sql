-- Revokes sessions $1 (an array; reason $2) until $3 seconds from now, as revoke_session.sql
-- does for one.
insert into auth.revoked_sessions as r (session_id, reason, expires_at)
select ids.id, $2, pg_catalog.clock_timestamp() operator(pg_catalog.+) pg_catalog.make_interval(secs => $3)
from pg_catalog.unnest($1::pg_catalog.uuid[]) as ids (id)
on conflict (session_id) do update
set expires_at = excluded.expires_at
where r.expires_at is not null
  and (excluded.expires_at is null or excluded.expires_at operator(pg_catalog.>) r.expires_at)
