-- Puts the newest standby key in use, after signing_key_demote.sql moved the key in use
-- aside (the unique index allows one in use at any moment). Returns the new key's kid (no
-- row: no standby key) and algorithm.
update auth.signing_key_material as m
set state = 'in_use', state_changed_at = pg_catalog.now()
where m.kid operator(pg_catalog.=) (
    select c.kid
    from auth.signing_key_material as c
    join auth.keys as k on k.kid operator(pg_catalog.=) c.kid
    where c.state operator(pg_catalog.=) 'standby' and k.retired_at is null
    order by c.created_at desc, c.kid desc
    limit 1)
returning m.kid, (select k.alg from auth.keys as k where k.kid operator(pg_catalog.=) m.kid)
