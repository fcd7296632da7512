-- Runs after the generated function definitions: triggers, SQL-language functions and the
-- privileges of everything.

-- Every backend drops its cached keyring when auth.keys changes (see src/keyring.rs).
-- ALWAYS: also when session_replication_role = replica (logical replication apply, restores).
create trigger keys_invalidate_cache
    after insert or update or delete or truncate on auth.keys
    for each statement execute function auth.invalidate_cached_state();
alter table auth.keys enable always trigger keys_invalidate_cache;
create trigger revoked_sessions_invalidate_cache
    after insert or update or delete or truncate on auth.revoked_sessions
    for each statement execute function auth.invalidate_cached_state();
alter table auth.revoked_sessions enable always trigger revoked_sessions_invalidate_cache;
create trigger revoked_users_invalidate_cache
    after insert or update or delete or truncate on auth.revoked_users
    for each statement execute function auth.invalidate_cached_state();
alter table auth.revoked_users enable always trigger revoked_users_invalidate_cache;
create trigger revoked_tokens_invalidate_cache
    after insert or update or delete or truncate on auth.revoked_tokens
    for each statement execute function auth.invalidate_cached_state();
alter table auth.revoked_tokens enable always trigger revoked_tokens_invalidate_cache;

-- A logical-replication apply worker fires no statement triggers, only row triggers enabled
-- REPLICA or ALWAYS (it runs with session_replication_role = replica): these row triggers,
-- enabled REPLICA only, carry the same invalidation there without costing ordinary writes
-- (a 1M-row purge) a trigger per row. TRUNCATE needs none: a new relfilenode invalidates.
create trigger keys_invalidate_cache_replica
    after insert or update or delete on auth.keys
    for each row execute function auth.invalidate_cached_state();
alter table auth.keys enable replica trigger keys_invalidate_cache_replica;
create trigger revoked_sessions_invalidate_cache_replica
    after insert or update or delete on auth.revoked_sessions
    for each row execute function auth.invalidate_cached_state();
alter table auth.revoked_sessions enable replica trigger revoked_sessions_invalidate_cache_replica;
create trigger revoked_users_invalidate_cache_replica
    after insert or update or delete on auth.revoked_users
    for each row execute function auth.invalidate_cached_state();
alter table auth.revoked_users enable replica trigger revoked_users_invalidate_cache_replica;
create trigger revoked_tokens_invalidate_cache_replica
    after insert or update or delete on auth.revoked_tokens
    for each row execute function auth.invalidate_cached_state();
alter table auth.revoked_tokens enable replica trigger revoked_tokens_invalidate_cache_replica;

-- Each written revocation key goes into the shared revocation filter (src/revocation_filter.rs).
-- ALWAYS for the same reason; a key written with these disabled would be missed by the filter,
-- so verification stops trusting it (and every cache) while any of them is not ALWAYS.
create trigger revoked_sessions_filter
    after insert or update on auth.revoked_sessions
    for each row execute function auth.note_revocation('session');
alter table auth.revoked_sessions enable always trigger revoked_sessions_filter;
create trigger revoked_users_filter
    after insert or update on auth.revoked_users
    for each row execute function auth.note_revocation('user');
alter table auth.revoked_users enable always trigger revoked_users_filter;
create trigger revoked_tokens_filter
    after insert or update on auth.revoked_tokens
    for each row execute function auth.note_revocation('token');
alter table auth.revoked_tokens enable always trigger revoked_tokens_filter;

comment on function auth.retire_key(text) is 'Retires a key: tokens signed with it are rejected from then on; a signing key is revoked. False when no active key has that kid.';

create function auth.jwks() returns jsonb
    language sql stable security definer
    set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.jsonb_build_object('keys', coalesce(
        pg_catalog.jsonb_agg(
            -- Only public members, whatever a hand-written row may hold.
            pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'kty', k.public_jwk -> 'kty', 'crv', k.public_jwk -> 'crv',
                'n', k.public_jwk -> 'n', 'e', k.public_jwk -> 'e',
                'x', k.public_jwk -> 'x', 'y', k.public_jwk -> 'y',
                'alg', k.alg, 'use', 'sig', 'kid', k.kid))
            order by k.kid),
        '[]'::jsonb))
    from auth.keys as k
    where k.retired_at is null and k.public_jwk is not null
$$;
comment on function auth.jwks() is 'The public JWKS of the active asymmetric keys. Never contains an HMAC secret.';

-- Key management: owner, superusers and session_auth_admin only.
revoke execute on function auth.add_key(text, text, text, text) from public;
revoke execute on function auth.import_jwks(jsonb, text) from public;
revoke execute on function auth.retire_key(text) from public;
grant execute on function auth.add_key(text, text, text, text) to session_auth_admin;
grant execute on function auth.import_jwks(jsonb, text) to session_auth_admin;
grant execute on function auth.retire_key(text) to session_auth_admin;

-- Revocation: everyone may sign out their own sessions (the functions check whose they
-- are); purging is for admins.
revoke execute on function auth.purge_revocations() from public;
grant execute on function auth.purge_revocations() to session_auth_admin;
revoke execute on function auth.revocation_filter() from public;
grant execute on function auth.revocation_filter() to session_auth_admin;
revoke execute on function auth.rebuild_revocation_filter() from public;
grant execute on function auth.rebuild_revocation_filter() to session_auth_admin;

-- The trigger function is no API.
revoke execute on function auth.invalidate_cached_state() from public;
revoke execute on function auth.note_revocation() from public;

grant usage on schema auth to public;

-- Claim functions are planned as once-per-statement sub-selects (src/planner_support.rs);
-- their CREATE FUNCTION names the support function (the `support` attribute in
-- src/api/identity.rs). Only the server calls it.
revoke execute on function auth.claim_function_support(internal) from public;

-- For PostgREST's db-pre-request hook: raises PT401 (HTTP 401) when the request's token
-- must be refused now (expired since PostgREST verified it).
create function auth.check_request() returns void
    language plpgsql stable
    set search_path = pg_catalog, pg_temp
as $$
declare
    reason text := auth.request_rejection_reason();
begin
    if reason is not null then
        raise sqlstate 'PT401' using
            message = 'invalid token: ' || reason,
            hint = 'Sign in again to get a new token.';
    end if;
end
$$;
comment on function auth.check_request() is 'For PostgREST''s db-pre-request: raises SQLSTATE PT401 (HTTP 401) when the request''s token must be refused now.';

-- The key in use is cached per backend (src/signing_keys.rs): changes reach every backend.
create trigger signing_key_material_invalidate_cache
    after insert or update or delete or truncate on auth.signing_key_material
    for each statement execute function auth.invalidate_cached_state();
alter table auth.signing_key_material enable always trigger signing_key_material_invalidate_cache;
create trigger signing_key_material_invalidate_cache_replica
    after insert or update or delete on auth.signing_key_material
    for each row execute function auth.invalidate_cached_state();
alter table auth.signing_key_material enable replica trigger signing_key_material_invalidate_cache_replica;

-- Signing keys: admins. Signing and sign-in: admins and session_auth_issuer. Refreshing:
-- everyone (the refresh token is the credential). Devices and ending: everyone for their
-- own sessions (the functions check whose), admins for anyone's.
revoke execute on function auth.generate_key(text) from public;
revoke execute on function auth.import_signing_key(text, text, text) from public;
revoke execute on function auth.rotate_signing_key() from public;
revoke execute on function auth.signing_keys() from public;
grant execute on function auth.generate_key(text) to session_auth_admin;
grant execute on function auth.import_signing_key(text, text, text) to session_auth_admin;
grant execute on function auth.rotate_signing_key() to session_auth_admin;
grant execute on function auth.signing_keys() to session_auth_admin;
revoke execute on function auth.sign(jsonb, interval) from public;
revoke execute on function auth.create_session(text, jsonb, text, inet, text, jsonb, text, timestamptz) from public;
revoke execute on function auth.update_session_aal(text, jsonb, uuid) from public;
grant execute on function auth.sign(jsonb, interval) to session_auth_admin, session_auth_issuer;
grant execute on function auth.create_session(text, jsonb, text, inet, text, jsonb, text, timestamptz) to session_auth_admin, session_auth_issuer;
grant execute on function auth.update_session_aal(text, jsonb, uuid) to session_auth_admin, session_auth_issuer;
revoke execute on function auth.purge_sessions(interval) from public;
grant execute on function auth.purge_sessions(interval) to session_auth_admin;

-- The audit trail: users read their own through auth.my_activity(); purging is for admins.
revoke execute on function auth.purge_audit_events() from public;
grant execute on function auth.purge_audit_events() to session_auth_admin;

-- Unusual activity: statistics and recent rejections are for admins.
revoke execute on function auth.stats() from public;
revoke execute on function auth.reset_stats() from public;
revoke execute on function auth.recent_rejections() from public;
grant execute on function auth.stats() to session_auth_admin;
grant execute on function auth.reset_stats() to session_auth_admin;
grant execute on function auth.recent_rejections() to session_auth_admin;

-- Every backend re-reads the rules when auth.activity_rules changes (src/activity/rules.rs).
create trigger activity_rules_invalidate_cache
    after insert or update or delete or truncate on auth.activity_rules
    for each statement execute function auth.invalidate_cached_state();
alter table auth.activity_rules enable always trigger activity_rules_invalidate_cache;
create trigger activity_rules_invalidate_cache_replica
    after insert or update or delete on auth.activity_rules
    for each row execute function auth.invalidate_cached_state();
alter table auth.activity_rules enable replica trigger activity_rules_invalidate_cache_replica;

-- A custom rule's function takes the event and says whether the rule fires; it runs with
-- the rights of the role that wrote the row (a superuser, e.g. restoring a dump, may name
-- another), which must own the function: whoever can replace the function's body can act
-- with no rights beyond their own. Temporary functions are refused. Inserting a built-in
-- rule that exists (a restore does) sets its action and thresholds instead.
create function auth.activity_rule_written() returns trigger
    language plpgsql
    set search_path = pg_catalog, pg_temp
as $$
declare
    writer oid := (select r.oid from pg_catalog.pg_roles as r
                   where r.rolname operator(pg_catalog.=) current_user);
begin
    if tg_op operator(pg_catalog.=) 'INSERT' and new.function is null and exists (
        select from auth.activity_rules as r
        where r.rule operator(pg_catalog.=) new.rule and r.function is null) then
        update auth.activity_rules as r
        set action = new.action, enabled = new.enabled, threshold = new.threshold,
            period = new.period, ipv4_prefix = new.ipv4_prefix, ipv6_prefix = new.ipv6_prefix,
            description = new.description
        where r.rule operator(pg_catalog.=) new.rule;
        return null;
    end if;
    if new.run_as is null or not exists (
        select from pg_catalog.pg_roles as r
        where r.oid operator(pg_catalog.=) writer and r.rolsuper) then
        new.run_as := writer::pg_catalog.regrole;
    end if;
    if new.function is not null then
        if not exists (
            select from pg_catalog.pg_proc as p
            where p.oid operator(pg_catalog.=) new.function::pg_catalog.oid
              and p.prokind operator(pg_catalog.=) 'f' and not p.proretset
              and p.pronargs operator(pg_catalog.=) 1
              and p.proargtypes[0] operator(pg_catalog.=) 'pg_catalog.jsonb'::pg_catalog.regtype
              and p.prorettype operator(pg_catalog.=) 'pg_catalog.bool'::pg_catalog.regtype) then
            raise exception 'the function of an activity rule takes (event jsonb) and returns boolean'
                using errcode = '22023';
        end if;
        if exists (
            select from pg_catalog.pg_proc as p
            join pg_catalog.pg_namespace as n on n.oid operator(pg_catalog.=) p.pronamespace
            where p.oid operator(pg_catalog.=) new.function::pg_catalog.oid
              and (n.nspname operator(pg_catalog.~) '^pg_(toast_)?temp_'
                   or n.oid operator(pg_catalog.=) pg_catalog.pg_my_temp_schema())) then
            raise exception 'the function of an activity rule cannot be a temporary one'
                using errcode = '22023';
        end if;
        -- (A disabled rule never runs: it may always be turned off.)
        if new.enabled and not exists (
            select from pg_catalog.pg_proc as p
            where p.oid operator(pg_catalog.=) new.function::pg_catalog.oid
              and p.proowner operator(pg_catalog.=) new.run_as::pg_catalog.oid) then
            raise exception 'the function of an activity rule must be owned by the role it runs as (%)', new.run_as
                using errcode = '42501';
        end if;
        if new.enabled and not (
            pg_catalog.has_function_privilege(
                new.run_as::pg_catalog.oid, new.function::pg_catalog.oid, 'execute')
            and pg_catalog.has_schema_privilege(
                new.run_as::pg_catalog.oid,
                (select p.pronamespace from pg_catalog.pg_proc as p
                 where p.oid operator(pg_catalog.=) new.function::pg_catalog.oid),
                'usage')) then
            raise exception 'permission denied to run % for an activity rule', new.function
                using errcode = '42501';
        end if;
    end if;
    return new;
end
$$;
create trigger activity_rules_run_as
    before insert or update on auth.activity_rules
    for each row execute function auth.activity_rule_written();

-- A built-in rule is turned off, not deleted (the code evaluates it by name).
create function auth.activity_rule_deleted() returns trigger
    language plpgsql
    set search_path = pg_catalog, pg_temp
as $$
begin
    if old.function is null then
        raise exception 'built-in activity rule % cannot be deleted', old.rule
            using errcode = '22023', hint = 'Set enabled = false to turn it off.';
    end if;
    return old;
end
$$;
create trigger activity_rules_keep_built_in
    before delete on auth.activity_rules
    for each row execute function auth.activity_rule_deleted();
