-- Starts a session: $1 id, $2 user, $3 not_after, $4 aal, $5 amr, $6 tag, $7 extra claims,
-- $8 user agent, $9 ip, $10 issuer, $11 whether a rule asks it to step up. Returns its creation time (µs since the Unix epoch).
insert into auth.sessions as s (id, user_id, issuer, created_at, updated_at, not_after, aal, amr,
                                tag, claims, initial_user_agent, initial_ip, user_agent, ip,
                                reauth_required)
values ($1, $2, $10, pg_catalog.clock_timestamp(), pg_catalog.clock_timestamp(), $3, $4,
        $5::pg_catalog.jsonb, $6, $7, $8, $9, $8, $9, $11)
returning (pg_catalog.date_part('epoch', s.created_at) operator(pg_catalog.*) 1000000)::pg_catalog.int8
