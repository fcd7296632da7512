-- Whether a key has kid $1.
select exists (select from auth.keys as k where k.kid operator(pg_catalog.=) $1)
