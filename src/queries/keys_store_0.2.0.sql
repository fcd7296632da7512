-- keys_store.sql for a database not yet updated to 0.3.0 (no issuer column).
insert into auth.keys as k (kid, alg, secret, public_jwk)
values ($1, $2, $3, $4)
on conflict (kid) do update
set alg = excluded.alg, secret = excluded.secret, public_jwk = excluded.public_jwk,
    created_at = pg_catalog.now(), retired_at = null
