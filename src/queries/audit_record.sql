-- Records an event about no session (a key change): $1 event, $2 details, by role $3 (the
-- caller's, before the switch to the tables' owner).
insert into auth.audit_events (event, details)
values ($1, $2::pg_catalog.jsonb operator(pg_catalog.||)
            pg_catalog.jsonb_build_object('by', $3::pg_catalog.regrole::pg_catalog.text))
