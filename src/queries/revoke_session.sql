-- Revokes session $1 (reason $2) until $3 seconds from now. An existing revocation's expiry
-- only grows (NULL, kept forever, is the longest). Returns whether the row is new.
insert into auth.revoked_sessions as r (session_id, reason, expires_at)
values ($1, $2, pg_catalog.clock_timestamp() operator(pg_catalog.+) pg_catalog.make_interval(secs => $3))
on conflict (session_id) do update
set expires_at = excluded.expires_at
where r.expires_at is not null
  and (excluded.expires_at is null or excluded.expires_at operator(pg_catalog.>) r.expires_at)
returning r.xmax operator(pg_catalog.=) 0
