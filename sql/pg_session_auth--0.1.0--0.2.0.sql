-- pg_session_auth 0.1.0 -> 0.2.0: the shared revocation filter (src/revocation_filter.rs).
-- Until this update has run, a 0.2.0 library finds the filter triggers missing and looks every
-- token up (no filter, no cached answers), which is correct but slower.
\echo Use "ALTER EXTENSION pg_session_auth UPDATE TO '0.2.0'" to load this file. \quit

CREATE FUNCTION auth."note_revocation"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'note_revocation_wrapper';

CREATE FUNCTION auth."revocation_filter"() RETURNS TABLE (
	"state" TEXT,
	"keys" bigint,
	"capacity" bigint,
	"bytes" bigint,
	"builds" bigint
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'revocation_filter_wrapper';

CREATE FUNCTION auth."rebuild_revocation_filter"() RETURNS bool
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'rebuild_revocation_filter_wrapper';

-- As in sql/finalize.sql.
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

revoke execute on function auth.revocation_filter() from public;
grant execute on function auth.revocation_filter() to session_auth_admin;
revoke execute on function auth.rebuild_revocation_filter() from public;
grant execute on function auth.rebuild_revocation_filter() to session_auth_admin;
revoke execute on function auth.note_revocation() from public;
