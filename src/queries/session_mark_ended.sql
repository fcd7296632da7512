-- Marks session $1 ended (reason $2), waiting for whoever holds its row (the worker that
-- ends a session on theft: the session's id is revoked already, so nothing waits on this).
update auth.sessions as s
set ended_at = pg_catalog.clock_timestamp(), end_reason = $2, updated_at = pg_catalog.clock_timestamp()
where s.id operator(pg_catalog.=) $1 and s.ended_at is null
