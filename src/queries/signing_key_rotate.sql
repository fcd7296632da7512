-- Puts the newest standby key in use; the key in use becomes previously used. Returns the
-- new key's kid (no row: no standby key).
with chosen as (
    select m.kid
    from auth.signing_key_material as m
    join auth.keys as k on k.kid operator(pg_catalog.=) m.kid
    where m.state operator(pg_catalog.=) 'standby' and k.retired_at is null
    order by m.created_at desc, m.kid desc
    limit 1
), retired as (
    update auth.signing_key_material as m
    set state = 'previously_used', state_changed_at = pg_catalog.now()
    where m.state operator(pg_catalog.=) 'in_use' and exists (select from chosen)
)
update auth.signing_key_material as m
set state = 'in_use', state_changed_at = pg_catalog.now()
from chosen
where m.kid operator(pg_catalog.=) chosen.kid
returning m.kid
