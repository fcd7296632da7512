-- Revokes token $1 (reason $2) until $3, or $4 seconds from now. An existing revocation's
-- expiry only grows (NULL, kept forever, is the longest). Returns whether the row is new.
insert into auth.revoked_tokens as r (jti, reason, expires_at)
values ($1, $2, coalesce($3, pg_catalog.clock_timestamp() operator(pg_catalog.+) pg_catalog.make_interval(secs => $4)))
on conflict (jti) do update
set expires_at = excluded.expires_at
where r.expires_at is not null
  and (excluded.expires_at is null or excluded.expires_at operator(pg_catalog.>) r.expires_at)
returning r.xmax operator(pg_catalog.=) 0
