-- Records event $1 about each session of $2 (an array), by role $3, with details $4: the
-- user, issuer, address and user agent are each session's.
insert into auth.audit_events (event, user_id, issuer, session_id, ip, user_agent, details)
select $1, s.user_id, s.issuer, s.id, s.ip, s.user_agent,
       $4::pg_catalog.jsonb operator(pg_catalog.||)
           pg_catalog.jsonb_build_object('by', $3::pg_catalog.regrole::pg_catalog.text)
from auth.sessions as s
where s.id operator(pg_catalog.=) any ($2::pg_catalog.uuid[])
order by s.id
