-- The settings that decide trust: only a superuser may change them.
\set ECHO none
\i tests/pg_regress/fixtures.psql
\set ECHO all
show pg_session_auth.leeway;
show pg_session_auth.max_token_bytes;
select name, context from pg_settings where name like 'pg_session_auth.%' order by name;

set role regress_app;
select error_of('set pg_session_auth.leeway = 99999');
select error_of('set pg_session_auth.issuer = ''https://evil.example''');
select error_of('set pg_session_auth.audience = ''anything''');
select error_of('set pg_session_auth.max_token_bytes = 1000000');
select error_of('select set_config(''pg_session_auth.leeway'', ''99999'', false)');
select error_of('alter role regress_app set pg_session_auth.leeway = 99999');
reset all;
-- Request roles cannot even read what decides trust.
select error_of('show pg_session_auth.leeway');
select error_of('select current_setting(''pg_session_auth.issuer'')');
select count(*) as visible_settings from pg_settings where name like 'pg_session_auth.%';
-- The expired token stays expired whatever the role tried.
select error_of(format('select auth.verify(%L)', :'expired'));
reset role;

-- A superuser requires an issuer and audience.
set pg_session_auth.issuer = 'https://issuer.example';
set pg_session_auth.audience = 'api';
set role regress_app;
select auth.verify(:'with_iss_aud') ->> 'iss' as iss;
select error_of(format('select auth.verify(%L)', :'wrong_iss'));
select error_of(format('select auth.verify(%L)', :'valid'));
reset role;
reset pg_session_auth.issuer;
reset pg_session_auth.audience;

-- No active key at all is its own error (55000), not a rejected token.
begin;
update auth.keys set retired_at = now();
set local role regress_app;
select error_of(format('select auth.verify(%L)', :'no_kid'));
rollback;
