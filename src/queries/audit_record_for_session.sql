-- Records an event about session $2, by role $4 (the caller's, before the switch to the
-- tables' owner): $1 event, $3 details, $5 address and $6 user agent presented (NULL: the
-- session's last ones); the user and issuer are the session's.
insert into auth.audit_events (event, user_id, issuer, session_id, ip, user_agent, details)
select $1, s.user_id, s.issuer, s.id, coalesce($5, s.ip), coalesce($6, s.user_agent),
       $3::pg_catalog.jsonb operator(pg_catalog.||)
           pg_catalog.jsonb_build_object('by', $4::pg_catalog.regrole::pg_catalog.text)
from auth.sessions as s
where s.id operator(pg_catalog.=) $2
