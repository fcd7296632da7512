-- Tables of signing keys and sessions (0.4.0), after bootstrap.sql in the install script;
-- sql/pg_session_auth--0.3.0--0.4.0.sql repeats them for an update.

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
