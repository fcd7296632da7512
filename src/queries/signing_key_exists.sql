-- Whether kid $1 is one of this database's signing keys.
select exists (select from auth.signing_key_material as m where m.kid operator(pg_catalog.=) $1)
