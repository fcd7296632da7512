-- Whether session $1 has ended (or been revoked).
select s.ended_at is not null
       or exists (select from auth.revoked_sessions as r where r.session_id operator(pg_catalog.=) s.id)
from auth.sessions as s
where s.id operator(pg_catalog.=) $1
