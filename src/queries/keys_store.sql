-- Adds or replaces a key ($1 kid, $2 alg, $3 secret, $4 public JWK, $5 issuer); a replaced
-- key is active again.
insert into auth.keys as k (kid, alg, secret, public_jwk, issuer)
values ($1, $2, $3, $4, $5)
on conflict (kid) do update
set alg = excluded.alg, secret = excluded.secret, public_jwk = excluded.public_jwk,
    issuer = excluded.issuer, created_at = pg_catalog.now(), retired_at = null
