-- The activity rules: name, action, enabled, threshold, period (µs), prefixes, and for a
-- custom rule its function as a qualified name (NULL when it no longer exists), run_as and
-- the function's owner.
select r.rule, r.action, r.enabled, r.threshold,
       (pg_catalog.date_part('epoch', r.period) operator(pg_catalog.*) 1000000)::pg_catalog.int8,
       r.ipv4_prefix::pg_catalog.int4, r.ipv6_prefix::pg_catalog.int4,
       r.function is not null,
       pg_catalog.quote_ident(n.nspname) operator(pg_catalog.||) '.' operator(pg_catalog.||) pg_catalog.quote_ident(p.proname),
       r.run_as::pg_catalog.oid, p.proowner
from auth.activity_rules as r
left join pg_catalog.pg_proc as p on p.oid operator(pg_catalog.=) r.function::pg_catalog.oid
left join pg_catalog.pg_namespace as n on n.oid operator(pg_catalog.=) p.pronamespace
order by r.rule
