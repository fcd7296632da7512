-- pg_session_auth 0.4.0 -> 0.5.0: unusual activity — counters and recent rejections
-- (auth.stats(), auth.reset_stats(), auth.recent_rejections()), detection rules
-- (auth.activity_rules, auth.known_sign_ins), sessions asked to step up
-- (auth.sessions.reauth_required), and auth.my_activity() with the rules that flagged each
-- event.

\echo Use "ALTER EXTENSION pg_session_auth UPDATE" to load this file. \quit

-- The extension's schema must be a superuser's: whoever owns it could rename it and put tables
-- of their own where the extension looks for its keys, revocations and rules. An install into
-- a schema `auth` of another role (which CREATE EXTENSION adopted) is not updated.
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

-- As sql/activity.sql.

-- A rule asked the session to step up: its access tokens carry "reauth_required": true until
-- auth.update_session_aal().
alter table auth.sessions add column reauth_required boolean not null default false;

-- The detection rules. Admins change an action or a threshold with UPDATE, add a rule as a
-- function (event jsonb) returns boolean; the rules are read once per backend and re-read
-- when this table changes.
create table auth.activity_rules (
    rule text primary key
        check (rule operator(pg_catalog.~) '^[a-z][a-z0-9_]*$' and octet_length(rule) <= 32),
    action text not null check (action in ('log', 'notify', 'step_up', 'revoke')),
    enabled boolean not null default true,
    threshold integer check (threshold > 0),
    period interval check (period > interval '0' and period <= interval '1 year'),
    ipv4_prefix smallint not null default 24 check (ipv4_prefix between 0 and 32),
    ipv6_prefix smallint not null default 48 check (ipv6_prefix between 0 and 128),
    -- A custom rule: auth calls it with the event; true means the rule fires.
    function regprocedure,
    -- Whose rights a custom rule's function runs with: the role that last wrote the row
    -- (set by a trigger).
    run_as regrole,
    description text,
    -- A theft always ends the session: its rule can only revoke, and cannot be turned off.
    constraint refresh_token_reused_revokes
        check (rule <> 'refresh_token_reused' or (action = 'revoke' and enabled)),
    -- Failures write from a background worker and have no session to act on.
    constraint failure_rules_log_or_notify
        check (rule not in ('failed_refreshes', 'use_after_sign_out')
               or action in ('log', 'notify')),
    constraint counted_rules_have_thresholds
        check (rule not in ('too_many_sessions', 'failed_refreshes', 'use_after_sign_out')
               or (threshold is not null and period is not null)),
    constraint windowed_rules_have_periods
        check (rule <> 'concurrent_networks' or period is not null),
    constraint built_in_rules_have_no_function
        check ((function is null) = (rule in ('refresh_token_reused', 'new_device',
               'new_network', 'session_device_changed', 'session_network_changed',
               'too_many_sessions', 'failed_refreshes', 'concurrent_networks',
               'use_after_sign_out')))
);
comment on table auth.activity_rules is 'Detection rules of pg_session_auth, evaluated at sign-in and refresh: action log, notify, step_up or revoke; thresholds; custom rules as functions (event jsonb) returns boolean.';
insert into auth.activity_rules (rule, action, threshold, period, ipv4_prefix, ipv6_prefix,
                                 description) values
    ('refresh_token_reused', 'revoke', null, null, 24, 48,
     'A superseded refresh token presented after the reuse interval (theft): the session ends.'),
    ('new_device', 'notify', null, null, 24, 48,
     'A sign-in with a user agent never seen for the user.'),
    ('new_network', 'log', null, null, 24, 48,
     'A sign-in from a network (/ipv4_prefix, /ipv6_prefix) the user never signed in from.'),
    ('session_device_changed', 'step_up', null, null, 24, 48,
     'A refresh with another user agent than the session''s last one.'),
    ('session_network_changed', 'log', null, null, 24, 48,
     'A refresh from another network than the session''s last one.'),
    ('too_many_sessions', 'notify', 10, interval '1 hour', 24, 48,
     'More than threshold sessions created for one user within period.'),
    ('failed_refreshes', 'log', 10, interval '5 minutes', 32, 64,
     'threshold invalid refresh tokens from one network (/ipv4_prefix, /ipv6_prefix: by default one address, one /64) within period.'),
    ('concurrent_networks', 'step_up', null, interval '1 minute', 24, 48,
     'A session refreshed from another network less than period after its last refresh.'),
    ('use_after_sign_out', 'notify', 3, interval '10 minutes', 24, 48,
     'threshold revoked tokens of one subject presented within period.');
revoke all on table auth.activity_rules from public;
grant select, insert, update, delete on table auth.activity_rules to session_auth_admin;
select pg_catalog.pg_extension_config_dump('auth.activity_rules', '');

-- Devices (user agents) and networks each user signed in from, for new_device and
-- new_network. auth.purge_audit_events() forgets what was last seen before the retention.
-- last_seen_at moves at most once a day, and has no index (only the purge reads it), so a
-- returning user's sign-in rewrites nothing, or a row in place.
create table auth.known_sign_ins (
    user_id text not null,
    issuer text not null default '',
    kind text not null check (kind in ('device', 'network')),
    value text not null,
    first_seen_at timestamptz not null default pg_catalog.clock_timestamp(),
    last_seen_at timestamptz not null default pg_catalog.clock_timestamp(),
    primary key (user_id, issuer, kind, value)
);
comment on table auth.known_sign_ins is 'Devices and networks each user signed in from (pg_session_auth new_device / new_network rules).';
revoke all on table auth.known_sign_ins from public;
grant select on table auth.known_sign_ins to session_auth_admin;
select pg_catalog.pg_extension_config_dump('auth.known_sign_ins', '');

-- auth.my_activity() gains its flagged column.
DROP FUNCTION auth."my_activity"(integer);
-- pg_session_auth::api::audit::my_activity
CREATE FUNCTION auth."my_activity"(
	"max_events" INT DEFAULT 50 /* Option < i32 > */
) RETURNS TABLE (
	"at" timestamp with time zone,  /* TimestampWithTimeZone */
	"event" TEXT,  /* String */
	"session_id" uuid,  /* Option < Uuid > */
	"ip" inet,  /* Option < Inet > */
	"user_agent" TEXT,  /* Option < String > */
	"details" jsonb,  /* JsonB */
	"flagged" TEXT[]  /* Vec < String > */
)
STABLE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'my_activity_wrapper';

-- pg_session_auth::api::activity::stats
CREATE FUNCTION auth."stats"() RETURNS TABLE (
	"name" TEXT,  /* String */
	"value" bigint  /* i64 */
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'stats_wrapper';

-- pg_session_auth::api::activity::reset_stats
CREATE FUNCTION auth."reset_stats"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reset_stats_wrapper';

-- pg_session_auth::api::activity::recent_rejections
CREATE FUNCTION auth."recent_rejections"() RETURNS TABLE (
	"at" timestamp with time zone,  /* TimestampWithTimeZone */
	"reason" TEXT,  /* String */
	"kid" TEXT,  /* Option < String > */
	"sub" TEXT,  /* Option < String > */
	"session_id" uuid,  /* Option < Uuid > */
	"ip" inet,  /* Option < Inet > */
	"role" TEXT,  /* Option < String > */
	"pid" INT  /* i32 */
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'recent_rejections_wrapper';

-- As sql/finalize.sql.
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
