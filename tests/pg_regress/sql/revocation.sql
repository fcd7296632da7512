-- Revocation: sign-out in its three scopes, admin revocations, who may do what.
\set ECHO none
\i tests/pg_regress/fixtures.psql
\set ECHO all
set role regress_authenticator;

-- sign_out('local') revokes this session. In the revoking transaction the identity is
-- simply gone (raising there would abort, and so undo, the sign-out).
begin;
select auth.authenticate(:'rev_a1') ->> 'session_id' as session;
select auth.sign_out();
select auth.uid() is null as identity_gone;
commit;
select error_of(format('select auth.verify(%L)', :'rev_a1')) as signed_out_session;
select auth.verify(:'rev_a2') ->> 'session_id' as other_session_still_valid;

-- sign_out('others') revokes every other session of mine issued so far, tokens without a
-- session and without iat included; mine and other users' stay valid.
begin;
select auth.authenticate(:'rev_a2') ->> 'session_id' as session;
select auth.sign_out('others');
select auth.uid() is not null as still_signed_in;
commit;
select name, coalesce(error_of(format('select auth.verify(%L)', token)), 'valid') as result
from (values
    ('this session', :'rev_a2'),
    ('another session (sid claim)', :'rev_a3'),
    ('no session, has jti', :'rev_a_jti'),
    ('no iat', :'rev_a_no_iat'),
    ('another user', :'rev_b1')
) as cases(name, token);

-- sign_out('global') revokes every session of mine, this one too.
begin;
select auth.authenticate(:'rev_a2') ->> 'session_id' as session;
select auth.sign_out('global');
commit;
select error_of(format('select auth.verify(%L)', :'rev_a2')) as after_global;
select auth.verify(:'rev_b1') ->> 'sub' as other_user_still_valid;

-- Scopes other than local/global/others are refused; signing out needs an identity.
begin;
select auth.authenticate(:'rev_b1') ->> 'sub' as sub;
select error_of('select auth.sign_out(''everything'')');
rollback;
select error_of('select auth.sign_out()');

-- One may revoke only what is one's own.
begin;
select auth.authenticate(:'rev_b1') ->> 'sub' as sub;
select error_of('select auth.revoke_session(''a2a2a2a2-0000-4000-8000-000000000002'')') as others_session;
select error_of('select auth.revoke_user(''c0ffee00-1111-4222-8333-444455556666'')') as others_user;
select error_of('select auth.revoke_token(''regress-jti-1'')') as others_token;
select error_of('select auth.purge_revocations()') as purge;
select error_of('select * from auth.revoked_sessions') as read_table;
rollback;
-- ... but a revocation of one's own session reads back as done, and a second one as
-- already done. Rolled back here, so it never happened.
begin;
select auth.authenticate(:'rev_b1') ->> 'sub' as sub;
select auth.revoke_session('b1b1b1b1-0000-4000-8000-000000000001') as revoked,
       auth.revoke_session('b1b1b1b1-0000-4000-8000-000000000001') as again;
rollback;
select auth.verify(:'rev_b1') ->> 'sub' as not_revoked_after_rollback;
reset role;

-- Admins revoke anything.
set role regress_key_admin;
select auth.revoke_token('regress-jti-2', '2100-01-01 00:00:00+00') as token_revoked;
select auth.is_revoked(auth.verify(:'rev_b1')) as session_b1_revoked;
select auth.revoke_user('decade00-1111-4222-8333-444455556666'::uuid, 'compromised');
select session_id, reason, expires_at from auth.revoked_sessions order by session_id;
select user_id, revoked_before is not null as all_sessions, keep_session_id, reason
from auth.revoked_users order by user_id;
select jti, expires_at from auth.revoked_tokens order by jti;
-- Nothing has expired (no max_token_lifetime, so session and user rows are kept).
select auth.purge_revocations() as purged;
reset role;
set role regress_authenticator;
select error_of(format('select auth.verify(%L)', :'rev_b_jti')) as revoked_jti;
select error_of(format('select auth.authenticate(%L)', :'rev_b1')) as revoked_user;
reset role;
