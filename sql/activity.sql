-- Unusual activity (0.5.0), after sessions.sql in the install script;
-- sql/pg_session_auth--0.4.0--0.5.0.sql repeats it for an update.

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
