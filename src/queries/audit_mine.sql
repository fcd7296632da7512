-- The latest $3 events of user $1 at issuer $2, newest first.
select e.at, e.event, e.session_id, e.ip, e.user_agent, e.details::pg_catalog.text
from auth.audit_events as e
where e.user_id operator(pg_catalog.=) $1 and e.issuer operator(pg_catalog.=) $2
order by e.at desc, e.id desc
limit $3
