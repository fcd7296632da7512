-- Records an event about session $2 (its user, issuer, last ip and user agent), by role $4
-- (the caller's, before the switch to the tables' owner): $1 event, $3 details.
insert into auth.audit_events (event, user_id, issuer, session_id, ip, user_agent, details)
select $1, s.user_id, s.issuer, s.id, s.ip, s.user_agent,
       $3::pg_catalog.jsonb operator(pg_catalog.||)
           pg_catalog.jsonb_build_object('by', $4::pg_catalog.regrole::pg_catalog.text)
from auth.sessions as s
where s.id operator(pg_catalog.=) $2
