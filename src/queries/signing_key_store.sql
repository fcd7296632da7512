-- Stores a new signing key: $1 kid, $2 alg, $3 HMAC secret (HS*), $4 public JWK, $5 private
-- material. It is put in use when no key is (the caller holds a lock against concurrent
-- generation), else in standby. Returns its state.
with verifying as (
    insert into auth.keys (kid, alg, secret, public_jwk)
    values ($1, $2, $3, $4)
)
insert into auth.signing_key_material as m (kid, private_key, state)
values ($1, $5,
        case when exists (select from auth.signing_key_material as u
                          join auth.keys as k on k.kid operator(pg_catalog.=) u.kid
                          where u.state operator(pg_catalog.=) 'in_use' and k.retired_at is null)
             then 'standby' else 'in_use' end)
returning m.state
