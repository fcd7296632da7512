-- Every key, for the per-backend keyring. The issuer through to_jsonb: a database not yet
-- updated to 0.3.0 has no such column.
select kid, alg, secret, public_jwk::pg_catalog.text, retired_at is not null,
       pg_catalog.to_jsonb(k) operator(pg_catalog.->>) 'issuer'
from auth.keys as k
