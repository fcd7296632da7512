-- The OID and owner of relation $1 in schema auth (none: the extension is not here).
select c.oid, c.relowner
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid operator(pg_catalog.=) c.relnamespace
where n.nspname operator(pg_catalog.=) 'auth' and c.relname operator(pg_catalog.=) $1
