-- Tables and roles of pg_session_auth. Runs before the generated function definitions.

-- The extension's schema must be a superuser's: whoever owns it could rename it and put tables
-- of their own where the extension looks for its keys, revocations and rules; whoever may
-- create objects in it could shadow its functions. CREATE EXTENSION adopts an `auth` schema
-- that exists already; one of another role, or where another role may create, is refused.
do $$
begin
    if not exists (select from pg_catalog.pg_namespace as n
                   join pg_catalog.pg_roles as r on r.oid operator(pg_catalog.=) n.nspowner
                   where n.nspname operator(pg_catalog.=) 'auth' and r.rolsuper) then
        raise exception 'schema auth must be owned by a superuser'
            using errcode = '42501',
                  hint = 'Drop that schema, or make a superuser its owner (ALTER SCHEMA auth OWNER TO ...), first.';
    end if;
    if exists (select from pg_catalog.pg_namespace as n,
                      pg_catalog.aclexplode(n.nspacl) as a
               where n.nspname operator(pg_catalog.=) 'auth'
                 and a.privilege_type operator(pg_catalog.=) 'CREATE'
                 and not exists (select from pg_catalog.pg_roles as r
                                 where r.oid operator(pg_catalog.=) a.grantee and r.rolsuper)) then
        raise exception 'only superusers may create objects in schema auth'
            using errcode = '42501',
                  hint = 'REVOKE CREATE ON SCHEMA auth FROM the other roles (and PUBLIC) first.';
    end if;
end
$$;

-- Members of session_auth_admin manage keys, revocations and sessions without being
-- superusers; members of session_auth_issuer sign tokens and start sessions (an app's
-- sign-in code, once it has checked the credentials). Roles are cluster-wide: DROP EXTENSION
-- leaves them in place.
do $$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'session_auth_admin') then
        create role session_auth_admin nologin;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'session_auth_issuer') then
        create role session_auth_issuer nologin;
    end if;
end
$$;

-- The keyring. Closed to every role but its owner; admins may read it but for the HMAC
-- secrets. An HMAC key keeps its secret in `secret`, an asymmetric key its public JWK in
-- `public_jwk`.
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
    -- A token this key verifies must carry exactly this iss (NULL: any issuer).
    issuer text check (octet_length(issuer) between 1 and 1024),
    check ((secret is null) <> (public_jwk is null)),
    check ((secret is not null) = (alg like 'HS%'))
);
comment on table auth.keys is 'Verification keys of pg_session_auth, by kid. Manage through auth.add_key(), auth.import_jwks() and auth.retire_key().';

revoke all on table auth.keys from public;
grant select (kid, alg, public_jwk, created_at, retired_at, issuer) on table auth.keys to session_auth_admin;

-- Keys are configuration: pg_dump keeps them (dumps are privileged; they contain HMAC secrets).
select pg_catalog.pg_extension_config_dump('auth.keys', '');

-- Revocations. Each row says when, why, and until when it matters: after every token it
-- covers has expired (expires_at; NULL = keep until deleted by hand) auth.purge_revocations()
-- deletes it. Written only through the auth.revoke_*/sign_out functions (and by admins'
-- tools as the owner); read by verification as the owner.
create table auth.revoked_sessions (
    session_id uuid primary key,
    revoked_at timestamptz not null default pg_catalog.now(),
    reason text,
    expires_at timestamptz
);
comment on table auth.revoked_sessions is 'Revoked sessions: tokens whose session_id (or sid) claim is listed are rejected.';

create table auth.revoked_users (
    user_id text not null check (octet_length(user_id) between 1 and 1024),
    -- Tokens of this subject issued (iat) at or before this moment are revoked ...
    revoked_before timestamptz,
    -- ... and so are those issued at or before this one, except in keep_session_id.
    others_revoked_before timestamptz,
    keep_session_id uuid,
    revoked_at timestamptz not null default pg_catalog.now(),
    reason text,
    expires_at timestamptz,
    check (revoked_before is not null or others_revoked_before is not null),
    check ((others_revoked_before is null) = (keep_session_id is null)),
    -- The subject at this issuer (tokens' iss); '' = at every issuer.
    issuer text not null default '' check (octet_length(issuer) <= 1024),
    constraint revoked_users_pkey primary key (user_id, issuer)
);
comment on table auth.revoked_users is 'Per-user cut-offs: every token of the subject (at the issuer, or at every issuer) issued at or before the cut-off is rejected.';

create table auth.revoked_tokens (
    jti text primary key check (octet_length(jti) between 1 and 1024),
    revoked_at timestamptz not null default pg_catalog.now(),
    reason text,
    expires_at timestamptz
);
comment on table auth.revoked_tokens is 'Revoked single tokens, by their jti claim.';

create index revoked_sessions_expires_at on auth.revoked_sessions (expires_at);
create index revoked_users_expires_at on auth.revoked_users (expires_at);
create index revoked_tokens_expires_at on auth.revoked_tokens (expires_at);

revoke all on table auth.revoked_sessions, auth.revoked_users, auth.revoked_tokens from public;
grant select on table auth.revoked_sessions, auth.revoked_users, auth.revoked_tokens to session_auth_admin;

select pg_catalog.pg_extension_config_dump('auth.revoked_sessions', '');
select pg_catalog.pg_extension_config_dump('auth.revoked_users', '');
select pg_catalog.pg_extension_config_dump('auth.revoked_tokens', '');
