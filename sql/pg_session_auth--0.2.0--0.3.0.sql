-- pg_session_auth 0.2.0 -> 0.3.0 (ALTER EXTENSION pg_session_auth UPDATE).
-- tests/client/test_upgrade.py checks that an updated install equals a fresh one.
-- Until this update has run, a 0.3.0 library finds the revocation tables' triggers not as it
-- expects and looks every token up (no filter, no cached answers): correct, but slower.
\echo Use "ALTER EXTENSION pg_session_auth UPDATE TO '0.3.0'" to load this file. \quit

-- Cache invalidation under logical replication: the apply worker fires row triggers only.
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

-- Keys bound to an issuer, and per-user cut-offs per issuer.
alter table auth.keys add column issuer text check (octet_length(issuer) between 1 and 1024);
alter table auth.revoked_users
    add column issuer text not null default '' check (octet_length(issuer) <= 1024),
    drop constraint revoked_users_pkey,
    add constraint revoked_users_pkey primary key (user_id, issuer);
comment on table auth.revoked_users is 'Per-user cut-offs: every token of the subject (at the issuer, or at every issuer) issued at or before the cut-off is rejected.';

-- NULL arguments raise 22004 instead of silently doing nothing (the functions are no longer
-- STRICT); keys may be bound to an issuer; per-user revocations hold per issuer.
DROP FUNCTION auth.add_key(text, text, text);
CREATE FUNCTION auth."add_key"(
	"kid" TEXT, /* Option < & str > */
	"alg" TEXT, /* Option < & str > */
	"key" TEXT, /* Option < & str > */
	"issuer" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'add_key_for_issuer_wrapper';
revoke execute on function auth.add_key(text, text, text, text) from public;
grant execute on function auth.add_key(text, text, text, text) to session_auth_admin;

DROP FUNCTION auth.import_jwks(jsonb);
CREATE FUNCTION auth."import_jwks"(
	"jwks" jsonb, /* Option < JsonbArgument > */
	"issuer" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS INT /* i32 */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'import_jwks_for_issuer_wrapper';
revoke execute on function auth.import_jwks(jsonb, text) from public;
grant execute on function auth.import_jwks(jsonb, text) to session_auth_admin;

DROP FUNCTION auth.revoke_user(text, text);
DROP FUNCTION auth.revoke_user(uuid, text);
CREATE FUNCTION auth."revoke_user"(
	"user_id" TEXT, /* Option < & str > */
	"reason" TEXT DEFAULT NULL, /* Option < & str > */
	"issuer" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'revoke_user_at_issuer_wrapper';
CREATE FUNCTION auth."revoke_user"(
	"user_id" uuid, /* Option < Uuid > */
	"reason" TEXT DEFAULT NULL, /* Option < & str > */
	"issuer" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'revoke_user_uuid_at_issuer_wrapper';

CREATE OR REPLACE FUNCTION auth."is_revoked"(
	"claims" jsonb /* Option < JsonbArgument > */
) RETURNS bool /* bool */
STABLE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'is_revoked_wrapper';
CREATE OR REPLACE FUNCTION auth."sign_out"(
	"scope" TEXT DEFAULT 'local' /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'sign_out_wrapper';

create or replace function auth.retire_key(kid text) returns boolean
    language plpgsql volatile security definer
    set search_path = pg_catalog, pg_temp
as $$
begin
    if kid is null then
        raise sqlstate '22004' using message = 'kid must not be NULL';
    end if;
    update auth.keys as k set retired_at = pg_catalog.now()
    where k.kid operator(pg_catalog.=) retire_key.kid and k.retired_at is null;
    return found;
end
$$;
