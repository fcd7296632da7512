-- Records a complete event: $1 event, $2 user, $3 issuer, $4 session, $5 address,
-- $6 user agent, $7 details, $8 the role acting (before the switch to the tables' owner).
-- Returns the event's id.
insert into auth.audit_events (event, user_id, issuer, session_id, ip, user_agent, details)
values ($1, $2, coalesce($3, ''), $4, $5, $6,
        $7::pg_catalog.jsonb operator(pg_catalog.||)
            pg_catalog.jsonb_build_object('by', $8::pg_catalog.regrole::pg_catalog.text))
returning id
