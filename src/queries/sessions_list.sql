-- The active sessions of user $1 at issuer $2 (NULL: at every issuer), newest first.
select s.id, s.created_at, s.refreshed_at, s.user_agent, s.ip, s.aal, s.tag, s.not_after
from auth.sessions as s
where s.user_id operator(pg_catalog.=) $1 and s.ended_at is null
  and ($2::pg_catalog.text is null or s.issuer operator(pg_catalog.=) $2)
  and not exists (select from auth.revoked_sessions as r where r.session_id operator(pg_catalog.=) s.id)
order by s.created_at desc, s.id
