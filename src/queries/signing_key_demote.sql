-- Before a rotation: the key in use becomes previously used, when a standby key is there to
-- take its place. Returns whether there is one.
with standby as (
    select from auth.signing_key_material as c
    join auth.keys as k on k.kid operator(pg_catalog.=) c.kid
    where c.state operator(pg_catalog.=) 'standby' and k.retired_at is null
), demoted as (
    update auth.signing_key_material as m
    set state = 'previously_used', state_changed_at = pg_catalog.now()
    where m.state operator(pg_catalog.=) 'in_use' and exists (select from standby)
)
select exists (select from standby)
