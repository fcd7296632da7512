-- What a sign-in of user $1 at issuer $2 from device $3 and network $4 (either NULL: not
-- seen) tells the rules, then remembers the device and network: whether anything was known
-- of the user before, whether the device and the network were, and how many sessions were
-- created for the user within $5 seconds before now. (What was seen is remembered with the
-- day it was last seen.)
with known as (
    select pg_catalog.count(*) operator(pg_catalog.>) 0 as anything,
           coalesce(pg_catalog.bool_or(k.kind operator(pg_catalog.=) 'device' and k.value operator(pg_catalog.=) $3), false) as device,
           coalesce(pg_catalog.bool_or(k.kind operator(pg_catalog.=) 'network' and k.value operator(pg_catalog.=) $4), false) as network
    from auth.known_sign_ins as k
    where k.user_id operator(pg_catalog.=) $1 and k.issuer operator(pg_catalog.=) $2
), remembered as (
    insert into auth.known_sign_ins as k (user_id, issuer, kind, value)
    select $1, $2, seen.kind, seen.value
    from (values ('device', $3), ('network', $4)) as seen (kind, value)
    where seen.value is not null
    on conflict (user_id, issuer, kind, value) do nothing
), seen_again as (
    -- Not a conflict update, which would lock (write) the row at every sign-in.
    update auth.known_sign_ins as k
    set last_seen_at = pg_catalog.clock_timestamp()
    where k.user_id operator(pg_catalog.=) $1 and k.issuer operator(pg_catalog.=) $2
      and (k.kind operator(pg_catalog.=) 'device' and k.value operator(pg_catalog.=) $3
           or k.kind operator(pg_catalog.=) 'network' and k.value operator(pg_catalog.=) $4)
      and k.last_seen_at operator(pg_catalog.<) (pg_catalog.clock_timestamp() operator(pg_catalog.-) interval '1 day')
)
select known.anything, known.device, known.network,
       (select pg_catalog.count(*) from auth.sessions as s
        where s.user_id operator(pg_catalog.=) $1 and s.issuer operator(pg_catalog.=) $2
          and s.created_at operator(pg_catalog.>) (pg_catalog.clock_timestamp() operator(pg_catalog.-) pg_catalog.make_interval(secs => $5)))
from known
