-- Tables and roles of pg_session_auth. Runs before the generated function definitions.

-- Members of this role manage keys (and later revocations) without being superusers.
-- Roles are cluster-wide: DROP EXTENSION leaves it in place.
do $$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'session_auth_admin') then
        create role session_auth_admin nologin;
    end if;
end
$$;

-- The keyring. Closed to every role but its owner; admins may read it. An HMAC key keeps
-- its secret in `secret`, an asymmetric key its public JWK in `public_jwk`.
create table auth.keys (
    kid text primary key
        check (octet_length(kid) between 1 and 256),
    alg text not null
        check (alg in ('HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512',
                       'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'EdDSA')),
    secret bytea,
    public_jwk jsonb,
    created_at timestamptz not null default pg_catalog.now(),
    retired_at timestamptz,
    check ((secret is null) <> (public_jwk is null)),
    check ((secret is not null) = (alg like 'HS%'))
);
comment on table auth.keys is 'Verification keys of pg_session_auth, by kid. Manage through auth.add_key(), auth.import_jwks() and auth.retire_key().';

revoke all on table auth.keys from public;
grant select on table auth.keys to session_auth_admin;

-- Keys are configuration: pg_dump keeps them (dumps are privileged; they contain HMAC secrets).
select pg_catalog.pg_extension_config_dump('auth.keys', '');
