-- The worked example run by scripts/demo.sh, as a superuser in a fresh database.
\set ON_ERROR_STOP on
\pset footer off

\echo '\n== 1. Install the extension (schema auth)'
create extension pg_session_auth;
-- pgcrypto only signs the demo's tokens; in production your identity provider does.
create extension pgcrypto;

\echo '\n== 2. Add a verification key: an HS256 shared secret, as Supabase and PostgREST use'
select auth.add_key('demo-key', 'HS256', 'demo-secret-change-me-0123456789-abcdef');
select kid, alg, retired_at from auth.keys;

\echo '\n== 3. Sign tokens for two users (an identity provider would do this)'
create function pg_temp.b64url(data bytea) returns text language sql as $$
    select translate(encode(data, 'base64'), E'+/=\n', '-_')
$$;
create function pg_temp.sign(claims jsonb) returns text language sql as $$
    with parts as (
        select pg_temp.b64url(convert_to('{"alg":"HS256","typ":"JWT","kid":"demo-key"}', 'utf8'))
               || '.' || pg_temp.b64url(convert_to(claims::text, 'utf8')) as signing_input
    )
    select signing_input || '.' || pg_temp.b64url(
        hmac(convert_to(signing_input, 'utf8'), convert_to('demo-secret-change-me-0123456789-abcdef', 'utf8'), 'sha256'))
    from parts
$$;
select pg_temp.sign(jsonb_build_object(
           'sub', '11111111-1111-4111-8111-111111111111', 'email', 'alice@example.com',
           'role', 'authenticated', 'exp', extract(epoch from now() + interval '1 hour')::int)) as alice_token,
       pg_temp.sign(jsonb_build_object(
           'sub', '22222222-2222-4222-8222-222222222222', 'email', 'bob@example.com',
           'role', 'authenticated', 'exp', extract(epoch from now() + interval '1 hour')::int)) as bob_token,
       pg_temp.sign(jsonb_build_object(
           'sub', '11111111-1111-4111-8111-111111111111',
           'exp', extract(epoch from now() - interval '1 hour')::int)) as expired_token
\gset
\echo 'alice_token =' :alice_token

\echo '\n== 4. auth.verify() checks the signature, exp/nbf/iat, and returns the claims'
select auth.verify(:'alice_token');

\echo '\n== 5. Anything else is rejected with SQLSTATE 28000 and one reason'
-- Runs a statement and shows how it ended.
create function pg_temp.try(statement text) returns text language plpgsql as $$
begin
    execute statement;
    return 'ok';
exception when others then
    return sqlstate || ': ' || sqlerrm;
end $$;
create function pg_temp.try_verify(token text) returns text language sql as $$
    select pg_temp.try(format('select auth.verify(%L)', token))
$$;
select 'tampered payload' as token,
       pg_temp.try_verify(regexp_replace(:'alice_token', '\.[^.]+\.', '.eyJzdWIiOiJldmUifQ.')) as result
union all select 'expired', pg_temp.try_verify(:'expired_token')
union all select 'alg: none', pg_temp.try_verify('eyJhbGciOiJub25lIn0.eyJzdWIiOiJldmUifQ.')
union all select 'garbage', pg_temp.try_verify('not a token');

\echo '\n== 6. Row-level security with auth.uid(), as Supabase and PostgREST deploy it'
create role anon nologin;
create role authenticated nologin;
create role authenticator nologin noinherit;
grant anon, authenticated to authenticator;
create table notes (id int primary key, owner uuid not null, body text not null);
insert into notes values
    (1, '11111111-1111-4111-8111-111111111111', 'Alice: buy milk'),
    (2, '11111111-1111-4111-8111-111111111111', 'Alice: call Bob'),
    (3, '22222222-2222-4222-8222-222222222222', 'Bob: fix the roof');
alter table notes enable row level security;
-- The policy Supabase users write, unchanged: no (select ...) wrapper needed.
create policy own_notes on notes for select using (owner = auth.uid());
grant select on notes to anon, authenticated;

set role authenticator;
\echo 'Alice''s request: authenticate, then query (the token''s role claim switches to authenticated):'
begin;
select auth.authenticate(:'alice_token') ->> 'email' as authenticated_as;
select current_user, auth.uid(), auth.email();
select * from notes order by id;
commit;
\echo 'Bob''s request:'
begin;
select auth.authenticate(:'bob_token') ->> 'email' as authenticated_as;
select * from notes order by id;
commit;
\echo 'a request that forges its identity with settings sees nothing:'
begin;
set local role authenticated;
set local request.jwt.claims = '{"sub": "11111111-1111-4111-8111-111111111111", "role": "authenticated"}';
select pg_temp.try('set local pg_session_auth.claims = ''{}''') as forging_the_private_setting;
select auth.uid() as uid, count(*) as visible_notes from notes;
commit;
\echo 'a tampered token is refused outright:'
select pg_temp.try(format('select auth.authenticate(%L)', regexp_replace(:'bob_token', '\.[^.]+$', '.AAAA'))) as tampered;
\echo 'auth.uid() is evaluated once per statement (an InitPlan), not once per row:'
set role authenticated;
explain (costs off) select * from notes;
reset role;

\echo '\n== 7. Retiring the key rejects its tokens from the next statement on'
select auth.retire_key('demo-key');
select pg_temp.try_verify(:'alice_token') as after_retire;

\echo '\n== 8. Sessions: the database signs in, rotates refresh tokens and catches a stolen one'
-- A signing key generated inside PostgreSQL (ES256 from the OS CSPRNG); its private half is
-- readable by the extension's owner only.
select auth.generate_key() as signing_kid \gset
select kid, alg, state from auth.signing_keys();
-- Sign-in (what an app's sign-in code, granted session_auth_issuer, calls once it has
-- checked the password): GoTrue's token response.
select access_token as session_token, refresh_token as refresh_0, session_id, token_type, expires_in
from auth.create_session('11111111-1111-4111-8111-111111111111',
                         '{"email": "alice@example.com"}', 'demo-browser/1.0', '192.0.2.10') \gset
\echo 'the access token works for RLS like any other:'
begin;
select auth.authenticate(:'session_token') ->> 'session_id' = :'session_id' as bound_to_the_session;
select count(*) as alices_notes from notes;
commit;
\echo 'each refresh returns a new refresh token; the old one is superseded:'
select refresh_token as refresh_1 from auth.refresh_session(:'refresh_0') \gset
select refresh_token as refresh_2 from auth.refresh_session(:'refresh_1') \gset
select :'refresh_1' <> :'refresh_0' as rotated, :'refresh_2' <> :'refresh_1' as rotated_again;
\echo 'a token superseded more than pg_session_auth.refresh_reuse_interval ago is theft:'
set pg_session_auth.refresh_reuse_interval = 0;
begin;
select pg_temp.try(format('select auth.refresh_session(%L)', :'refresh_0')) as stolen_token;
rollback;
\echo '... and the whole session ended although that transaction rolled back:'
select pg_temp.try(format('select auth.refresh_session(%L)', :'refresh_2')) as current_token,
       pg_temp.try_verify(:'session_token') as access_token;
select event, details ->> 'cause' as cause from auth.audit_events
where session_id = :'session_id' order by id;

\echo '\n== 9. Unusual activity: rules in a table, acting as the event happens'
select rule, action, enabled, threshold, period from auth.activity_rules order by rule;
-- An app LISTENs to hear of new devices ("new sign-in from ..." mails).
listen pg_session_auth_activity;
select refresh_token as bob_refresh from auth.create_session('22222222-2222-4222-8222-222222222222',
    '{}', 'demo-browser/1.0', '198.51.100.7') \gset
select 1 as bob_signed_in_again
from auth.create_session('22222222-2222-4222-8222-222222222222', '{}', 'demo-phone/2.0', '198.51.100.7');
\echo 'a refresh from another user agent asks the session to step up (reauth_required):'
select convert_from(decode(translate(split_part(access_token, '.', 2), '-_', '+/')
           || repeat('=', (4 - length(split_part(access_token, '.', 2)) % 4) % 4), 'base64'), 'utf8')::jsonb
           -> 'reauth_required' as reauth_required
from auth.refresh_session(:'bob_refresh', 'curl/8.0', '198.51.100.7');
select event, details ->> 'rule' as rule, details ->> 'action' as action, user_agent
from auth.audit_events where event = 'activity_detected' order by id;
\echo 'counters (cluster-wide with shared_preload_libraries) and the recent rejections:'
select name, value from auth.stats()
where name in ('cluster_wide', 'verifications', 'rejections', 'rejected.retired_key',
               'sessions.created', 'sessions.refreshed', 'rules.new_device',
               'rules.session_device_changed', 'rules.refresh_token_reused');
select reason, kid, sub is not null as signature_was_good from auth.recent_rejections() limit 5;
