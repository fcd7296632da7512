-- A step-up of session $1 to level $2 with methods $3: the counter advances by 2 and every
-- token below it is superseded by the step-up. Returns the new counter, or no row when the
-- session has ended. A step-up a rule asked for is done.
update auth.sessions as s
set aal = $2, amr = $3::pg_catalog.jsonb,
    refresh_counter = s.refresh_counter operator(pg_catalog.+) 2,
    step_up_floor = s.refresh_counter operator(pg_catalog.+) 2,
    superseded_at = (s.superseded_at operator(pg_catalog.||) array[pg_catalog.clock_timestamp(), pg_catalog.clock_timestamp()])[
                        greatest(1, pg_catalog.cardinality(s.superseded_at) operator(pg_catalog.-) 13) :],
    updated_at = pg_catalog.clock_timestamp(),
    reauth_required = false
where s.id operator(pg_catalog.=) $1 and s.ended_at is null
returning s.refresh_counter
