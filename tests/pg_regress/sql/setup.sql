-- Runs once, right after the regression database is (re)created, as a superuser.
\set ECHO none
\i tests/pg_regress/fixtures.psql
\set ECHO all
create extension pg_session_auth;

-- Roles are cluster-wide and outlive the database; create them once.
do $$
begin
    if not exists (select from pg_roles where rolname = 'regress_app') then
        create role regress_app nologin;
    end if;
    if not exists (select from pg_roles where rolname = 'anon') then
        create role anon nologin;
    end if;
    if not exists (select from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin;
    end if;
    if not exists (select from pg_roles where rolname = 'regress_authenticator') then
        create role regress_authenticator nologin noinherit in role anon, authenticated;
    end if;
    if not exists (select from pg_roles where rolname = 'regress_key_admin') then
        create role regress_key_admin nologin in role session_auth_admin;
    end if;
end
$$;

-- Runs a statement and shows its error as "SQLSTATE: message" (NULL when it succeeds).
create function public.error_of(statement text) returns text
    language plpgsql
as $$
begin
    execute statement;
    return null;
exception when others then
    return sqlstate || ': ' || sqlerrm;
end
$$;

select auth.add_key('regress-hs', 'HS256', :'hs_secret');
select auth.add_key('regress-rs', 'RS256', :'rsa_pem');
select auth.add_key('regress-es', 'ES256', :'ec_pem');
select auth.add_key('regress-ed', 'EdDSA', :'ed_pem');
select kid, alg, secret is not null as has_secret, public_jwk ->> 'kty' as kty
from auth.keys order by kid;
