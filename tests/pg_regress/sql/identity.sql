-- auth.authenticate and the claim functions: binding, scoping, forgery, roles, planning.
\set ECHO none
\i tests/pg_regress/fixtures.psql
\set ECHO all
create table public.todos (id int primary key, user_id uuid not null, task text not null);
insert into public.todos values
    (1, '0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40', 'ada: write the paper'),
    (2, '0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40', 'ada: review'),
    (3, '7d2e9c14-6b3a-4f58-9e01-3c8a5b6d7e2f', 'bob: fix the roof');
alter table public.todos enable row level security;
create policy own_todos on public.todos using (user_id = auth.uid());
grant select on public.todos to authenticated, anon;

set role regress_authenticator;
-- Without authenticate there is no identity, and RLS shows nothing.
select auth.uid(), auth.jwt(), auth.role(), auth.email(), auth.user_id(), auth.session_id();

-- Bound for the transaction, with the role the token names.
begin;
select auth.authenticate(:'alice') ->> 'sub' as sub;
select current_user, auth.uid(), auth.role(), auth.email(), auth.session_id();
select * from public.todos order by id;
select current_setting('request.jwt.claims')::jsonb = auth.jwt() as request_claims_set;
commit;
select current_user, auth.uid() is null as no_identity_after_commit;

-- The claim functions are planned once per statement, not once per row.
set role authenticated;
explain (costs off) select * from public.todos where user_id = auth.uid();
set role regress_authenticator;

-- A client cannot forge the identity with settings.
begin;
select auth.authenticate(:'alice') ->> 'email' as email;
select error_of($$set local request.jwt.claims = '{"sub": "7d2e9c14-6b3a-4f58-9e01-3c8a5b6d7e2f", "role": "authenticated"}'$$) as forged_request_claims;
select current_setting('request.jwt.claims')::jsonb ->> 'email' as request_claims_still_alice;
select error_of($$set local request.jwt.claim.sub = '7d2e9c14-6b3a-4f58-9e01-3c8a5b6d7e2f'$$) as forged_legacy_sub;
select auth.email() as still_alice, count(*) as alices_rows from public.todos;
select error_of('set pg_session_auth.claims = ''{"sub": "7d2e9c14-6b3a-4f58-9e01-3c8a5b6d7e2f"}''');
select error_of('select set_config(''pg_session_auth.claims'', ''{}'', true)');
select error_of('select current_setting(''pg_session_auth.claims'')');
reset role;
select auth.email() as still_alice;
rollback;

-- Savepoints: ROLLBACK TO undoes a later authenticate; a second call replaces the first.
begin;
select auth.authenticate(:'alice') ->> 'email';
savepoint before_bob;
select auth.authenticate(:'bob') ->> 'email';
select auth.email(), count(*) as bobs_rows from public.todos;
rollback to before_bob;
select auth.email(), count(*) as alices_rows from public.todos;
select auth.authenticate(:'anon') ->> 'role';
select current_user, auth.uid(), count(*) as anon_rows from public.todos;
commit;

-- Subjects that are not UUIDs: uid() is NULL, user_id() has the text.
begin;
select auth.authenticate(:'non_uuid_sub') is not null;
select auth.uid(), auth.user_id();
rollback;

-- Role claims: only allowed, existing, non-superuser roles the session user may become.
select name, error_of(format('select auth.authenticate(%L)', token)) as error
from (values
    ('role postgres', :'role_postgres'),
    ('empty role', :'role_empty'),
    ('quoted role', :'role_quoted'),
    ('unknown role', :'role_unknown'),
    ('role is a number', :'role_number'),
    ('expired token', :'expired'),
    ('bad signature', :'bad_sig'),
    ('NUL in a claim', :'nul_claim'),
    ('NULL token', null)
) as cases(name, token);
-- A token without a role claim keeps the current role.
begin;
select auth.authenticate(:'no_role') ->> 'sub';
select current_user, auth.uid();
rollback;
reset role;

-- Claim functions inside PL/pgSQL expressions (which PL/pgSQL evaluates as "simple
-- expressions"; the planner rewrite must leave them alone).
set role regress_authenticator;
begin;
select auth.authenticate(:'alice') ->> 'sub' as sub;
do $$
declare
    who text := coalesce(auth.user_id(), 'nobody');
begin
    if auth.uid() is null then
        raise exception 'no identity';
    end if;
    raise notice 'uid %, email %, user %', auth.uid()::text, auth.jwt() ->> 'email', who;
end
$$;
rollback;
reset role;
