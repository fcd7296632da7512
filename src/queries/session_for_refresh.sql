-- A session as a refresh needs it, locked against concurrent refreshes and sign-outs.
-- Times in µs since the Unix epoch.
select s.user_id,
       (pg_catalog.date_part('epoch', s.created_at) operator(pg_catalog.*) 1000000)::pg_catalog.int8,
       (pg_catalog.date_part('epoch', coalesce(s.refreshed_at, s.created_at)) operator(pg_catalog.*) 1000000)::pg_catalog.int8,
       (pg_catalog.date_part('epoch', s.not_after) operator(pg_catalog.*) 1000000)::pg_catalog.int8,
       s.aal, s.amr::pg_catalog.text, s.claims::pg_catalog.text,
       s.refresh_counter, s.step_up_floor,
       (select pg_catalog.array_agg((pg_catalog.date_part('epoch', t) operator(pg_catalog.*) 1000000)::pg_catalog.int8 order by n)
        from pg_catalog.unnest(s.superseded_at) with ordinality as u(t, n)),
       s.ended_at is not null
           or exists (select from auth.revoked_sessions as r where r.session_id operator(pg_catalog.=) s.id)
           -- A sign-in racing a revoke_user of the same user does not outlive it.
           or exists (select from auth.revoked_users as u
                      where u.user_id operator(pg_catalog.=) s.user_id
                        and u.issuer operator(pg_catalog.=) any (array['', s.issuer])
                        and s.created_at operator(pg_catalog.<=) u.revoked_before),
       (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) operator(pg_catalog.*) 1000000)::pg_catalog.int8,
       s.issuer, s.user_agent, pg_catalog.host(s.ip), s.reauth_required
from auth.sessions as s
where s.id operator(pg_catalog.=) $1
for update of s
