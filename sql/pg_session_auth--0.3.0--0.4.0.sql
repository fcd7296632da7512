-- pg_session_auth 0.3.0 -> 0.4.0 (ALTER EXTENSION pg_session_auth UPDATE): signing keys and
-- sessions. tests/client/test_upgrade.py checks that an updated install equals a fresh one.
\echo Use "ALTER EXTENSION pg_session_auth UPDATE TO '0.4.0'" to load this file. \quit

do $$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'session_auth_issuer') then
        create role session_auth_issuer nologin;
    end if;
end
$$;

-- Admins see the keyring but not its HMAC secrets.
revoke select on table auth.keys from session_auth_admin;
grant select (kid, alg, public_jwk, created_at, retired_at, issuer) on table auth.keys to session_auth_admin;

-- The private half of the keys this database signs with; the public half is the key's row
-- in auth.keys. Readable by the extension's owner only: not even session_auth_admin.
create table auth.signing_key_material (
    kid text primary key references auth.keys (kid) on delete cascade,
    private_key bytea not null,
    state text not null default 'standby'
        check (state in ('standby', 'in_use', 'previously_used', 'revoked')),
    created_at timestamptz not null default pg_catalog.now(),
    state_changed_at timestamptz not null default pg_catalog.now()
);
comment on table auth.signing_key_material is 'Private signing keys of pg_session_auth (PKCS#8 DER, or the HMAC secret). Owner only; manage through auth.generate_key(), auth.import_signing_key(), auth.rotate_signing_key() and auth.retire_key().';
create unique index signing_key_material_one_in_use on auth.signing_key_material (state)
    where state = 'in_use';
revoke all on table auth.signing_key_material from public;
select pg_catalog.pg_extension_config_dump('auth.signing_key_material', '');

-- Sessions. No refresh token is stored: tokens are derived from a server secret kept outside
-- every table, the session id and refresh_counter; superseded_at remembers when the last
-- superseded counters were superseded (for the reuse interval).
create table auth.sessions (
    id uuid primary key,
    user_id text not null check (octet_length(user_id) between 1 and 1024),
    -- The iss its tokens carry ('' when none): a user of another issuer with the same sub
    -- does not see or end it.
    issuer text not null default '' check (octet_length(issuer) <= 1024),
    created_at timestamptz not null default pg_catalog.now(),
    updated_at timestamptz not null default pg_catalog.now(),
    refreshed_at timestamptz,
    not_after timestamptz,
    aal text not null default 'aal1' check (aal in ('aal1', 'aal2', 'aal3')),
    amr jsonb not null default '[]',
    tag text check (octet_length(tag) <= 1024),
    claims jsonb not null default '{}',
    initial_user_agent text,
    initial_ip inet,
    user_agent text,
    ip inet,
    refresh_counter bigint not null default 0 check (refresh_counter >= 0),
    step_up_floor bigint not null default 0 check (step_up_floor >= 0),
    superseded_at timestamptz[] not null default '{}',
    ended_at timestamptz,
    end_reason text
);
comment on table auth.sessions is 'Sessions of pg_session_auth. Start with auth.create_session(), refresh with auth.refresh_session(), end with auth.end_session() or auth.sign_out().';
create index sessions_user_id on auth.sessions (user_id);
revoke all on table auth.sessions from public;
grant select on table auth.sessions to session_auth_admin;
select pg_catalog.pg_extension_config_dump('auth.sessions', '');

-- The audit trail: every committed session and key event (never token material or secrets).
-- Admins read it; users read their own through auth.my_activity(); auth.purge_audit_events()
-- deletes what is older than pg_session_auth.audit_retention.
create table auth.audit_events (
    id bigint generated always as identity primary key,
    at timestamptz not null default pg_catalog.clock_timestamp(),
    event text not null,
    user_id text,
    issuer text not null default '',
    session_id uuid,
    ip inet,
    user_agent text,
    details jsonb not null default '{}'
);
comment on table auth.audit_events is 'Audit trail of pg_session_auth: sign-ins, refreshes, reuse, step-ups, sign-outs, revocations, expiries and key changes. Never token material.';
create index audit_events_user_id on auth.audit_events (user_id, at);
create index audit_events_at on auth.audit_events (at);
revoke all on table auth.audit_events from public;
grant select on table auth.audit_events to session_auth_admin;
select pg_catalog.pg_extension_config_dump('auth.audit_events', '');
-- Its id sequence too: a restore must not hand out the ids of restored events again.
select pg_catalog.pg_extension_config_dump('auth.audit_events_id_seq', '');

-- auth.retire_key runs as its caller now (so the audit trail names them), in C.
drop function auth.retire_key(text);

-- pg_session_auth::api::sessions::create_session
CREATE FUNCTION auth."create_session"(
	"user_id" TEXT, /* Option < & str > */
	"claims" jsonb DEFAULT '{}', /* Option < JsonbArgument > */
	"user_agent" TEXT DEFAULT NULL, /* Option < & str > */
	"ip" inet DEFAULT NULL, /* Option < Inet > */
	"aal" TEXT DEFAULT 'aal1', /* Option < & str > */
	"amr" jsonb DEFAULT NULL, /* Option < JsonbArgument > */
	"tag" TEXT DEFAULT NULL, /* Option < & str > */
	"not_after" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS TABLE (
	"access_token" TEXT,  /* String */
	"token_type" TEXT,  /* String */
	"expires_in" INT,  /* i32 */
	"expires_at" bigint,  /* i64 */
	"refresh_token" TEXT,  /* Option < String > */
	"session_id" uuid  /* Uuid */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'create_session_wrapper';


-- pg_session_auth::api::sessions::end_session
CREATE FUNCTION auth."end_session"(
	"session_id" uuid /* Option < Uuid > */
) RETURNS bool /* bool */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'end_session_wrapper';


-- pg_session_auth::api::signing::generate_key
CREATE FUNCTION auth."generate_key"(
	"alg" TEXT DEFAULT 'ES256' /* Option < & str > */
) RETURNS TEXT /* String */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'generate_key_wrapper';


-- pg_session_auth::api::signing::import_signing_key
CREATE FUNCTION auth."import_signing_key"(
	"private_key" TEXT, /* Option < & str > */
	"alg" TEXT, /* Option < & str > */
	"kid" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TEXT /* String */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'import_signing_key_wrapper';


-- pg_session_auth::api::sessions::list_sessions
CREATE FUNCTION auth."list_sessions"() RETURNS TABLE (
	"session_id" uuid,  /* Uuid */
	"created_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"refreshed_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"user_agent" TEXT,  /* Option < String > */
	"ip" inet,  /* Option < Inet > */
	"aal" TEXT,  /* String */
	"tag" TEXT,  /* Option < String > */
	"not_after" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"is_current" bool  /* bool */
)
STRICT STABLE PARALLEL RESTRICTED 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'list_own_sessions_wrapper';


-- pg_session_auth::api::sessions::list_sessions
CREATE FUNCTION auth."list_sessions"(
	"user_id" TEXT /* Option < & str > */
) RETURNS TABLE (
	"session_id" uuid,  /* Uuid */
	"created_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"refreshed_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"user_agent" TEXT,  /* Option < String > */
	"ip" inet,  /* Option < Inet > */
	"aal" TEXT,  /* String */
	"tag" TEXT,  /* Option < String > */
	"not_after" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"is_current" bool  /* bool */
)
STABLE PARALLEL RESTRICTED 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'list_user_sessions_wrapper';


-- pg_session_auth::api::audit::my_activity
CREATE FUNCTION auth."my_activity"(
	"max_events" INT DEFAULT 50 /* Option < i32 > */
) RETURNS TABLE (
	"at" timestamp with time zone,  /* TimestampWithTimeZone */
	"event" TEXT,  /* String */
	"session_id" uuid,  /* Option < Uuid > */
	"ip" inet,  /* Option < Inet > */
	"user_agent" TEXT,  /* Option < String > */
	"details" jsonb  /* JsonB */
)
STABLE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'my_activity_wrapper';


-- pg_session_auth::api::audit::purge_audit_events
CREATE FUNCTION auth."purge_audit_events"() RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'purge_audit_events_wrapper';


-- pg_session_auth::api::sessions::purge_sessions
CREATE FUNCTION auth."purge_sessions"(
	"older_than" interval DEFAULT '1 day' /* Option < Interval > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'purge_sessions_wrapper';


-- pg_session_auth::api::sessions::refresh_session
CREATE FUNCTION auth."refresh_session"(
	"refresh_token" TEXT, /* Option < & str > */
	"user_agent" TEXT DEFAULT NULL, /* Option < & str > */
	"ip" inet DEFAULT NULL /* Option < Inet > */
) RETURNS TABLE (
	"access_token" TEXT,  /* String */
	"token_type" TEXT,  /* String */
	"expires_in" INT,  /* i32 */
	"expires_at" bigint,  /* i64 */
	"refresh_token" TEXT,  /* Option < String > */
	"session_id" uuid  /* Uuid */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refresh_session_wrapper';


-- pg_session_auth::api::sessions::refresh_session_cookie
CREATE FUNCTION auth."refresh_session_cookie"() RETURNS TABLE (
	"access_token" TEXT,  /* String */
	"token_type" TEXT,  /* String */
	"expires_in" INT,  /* i32 */
	"expires_at" bigint,  /* i64 */
	"refresh_token" TEXT,  /* Option < String > */
	"session_id" uuid  /* Uuid */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refresh_session_cookie_wrapper';


-- pg_session_auth::api::keys::retire_key
CREATE FUNCTION auth."retire_key"(
	"kid" TEXT /* Option < & str > */
) RETURNS bool /* bool */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'retire_key_wrapper';


-- pg_session_auth::api::signing::rotate_signing_key
CREATE FUNCTION auth."rotate_signing_key"() RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rotate_signing_key_wrapper';


-- pg_session_auth::api::signing::sign
CREATE FUNCTION auth."sign"(
	"claims" jsonb, /* Option < JsonbArgument > */
	"expires_in" interval DEFAULT '1 hour' /* Option < Interval > */
) RETURNS TEXT /* String */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'sign_wrapper';


-- pg_session_auth::api::signing::signing_keys
CREATE FUNCTION auth."signing_keys"() RETURNS TABLE (
	"kid" TEXT,  /* String */
	"alg" TEXT,  /* String */
	"state" TEXT,  /* String */
	"created_at" timestamp with time zone  /* TimestampWithTimeZone */
)
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'signing_keys_wrapper';


-- pg_session_auth::api::sessions::update_session_aal
CREATE FUNCTION auth."update_session_aal"(
	"aal" TEXT, /* Option < & str > */
	"amr" jsonb DEFAULT NULL, /* Option < JsonbArgument > */
	"session_id" uuid DEFAULT NULL /* Option < Uuid > */
) RETURNS TABLE (
	"access_token" TEXT,  /* String */
	"token_type" TEXT,  /* String */
	"expires_in" INT,  /* i32 */
	"expires_at" bigint,  /* i64 */
	"refresh_token" TEXT,  /* Option < String > */
	"session_id" uuid  /* Uuid */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'update_session_aal_wrapper';

revoke execute on function auth.retire_key(text) from public;
grant execute on function auth.retire_key(text) to session_auth_admin;
comment on function auth.retire_key(text) is 'Retires a key: tokens signed with it are rejected from then on; a signing key is revoked. False when no active key has that kid.';

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
