-- The revocation tables of this database: name, OID, owner, how many of their triggers are
-- exactly as sql/finalize.sql creates them (3 when intact), the version of every trigger on
-- them and of the two trigger functions (to notice any change), and whether revoked_users has
-- the issuer column (0.3.0 and later). Catalog columns, not deparsed text, which
-- quote_all_identifiers would change.
select c.relname::pg_catalog.text,
       c.oid,
       c.relowner,
       (select pg_catalog.count(*)
        from pg_catalog.pg_trigger t
        join pg_catalog.pg_proc p on p.oid operator(pg_catalog.=) t.tgfoid
        where t.tgrelid operator(pg_catalog.=) c.oid
          and p.prolang operator(pg_catalog.=) 13
          and t.tgqual is null and t.tgoldtable is null and t.tgnewtable is null
          and t.tgconstraint operator(pg_catalog.=) 0
          and pg_catalog.cardinality(t.tgattr::pg_catalog.int2[]) operator(pg_catalog.=) 0
          and (    t.tgname::pg_catalog.text operator(pg_catalog.=) (c.relname::pg_catalog.text operator(pg_catalog.||) '_invalidate_cache')
               and p.prosrc operator(pg_catalog.=) 'invalidate_cached_state_wrapper'
               and t.tgenabled operator(pg_catalog.=) 'A'
               and t.tgtype operator(pg_catalog.=) 60 and t.tgnargs operator(pg_catalog.=) 0
            or     t.tgname::pg_catalog.text operator(pg_catalog.=) (c.relname::pg_catalog.text operator(pg_catalog.||) '_invalidate_cache_replica')
               and p.prosrc operator(pg_catalog.=) 'invalidate_cached_state_wrapper'
               and t.tgenabled operator(pg_catalog.=) 'R'
               and t.tgtype operator(pg_catalog.=) 29 and t.tgnargs operator(pg_catalog.=) 0
            or     t.tgname::pg_catalog.text operator(pg_catalog.=) (c.relname::pg_catalog.text operator(pg_catalog.||) '_filter')
               and p.prosrc operator(pg_catalog.=) 'note_revocation_wrapper'
               and t.tgenabled operator(pg_catalog.=) 'A'
               and t.tgtype operator(pg_catalog.=) 21 and t.tgnargs operator(pg_catalog.=) 1
               and t.tgargs operator(pg_catalog.=) (pg_catalog.convert_to(pg_catalog.rtrim(pg_catalog.substr(c.relname, 9), 's'), 'SQL_ASCII')
                                                   operator(pg_catalog.||) pg_catalog.decode('00', 'hex')))),
       (select pg_catalog.string_agg(t.oid::pg_catalog.text operator(pg_catalog.||) ':'
                                     operator(pg_catalog.||) t.xmin::pg_catalog.text, ',' order by t.oid)
        from pg_catalog.pg_trigger t
        where t.tgrelid operator(pg_catalog.=) c.oid),
       (select pg_catalog.string_agg(p.oid::pg_catalog.text operator(pg_catalog.||) ':'
                                     operator(pg_catalog.||) p.xmin::pg_catalog.text, ',' order by p.oid)
        from pg_catalog.pg_proc p
        where p.oid operator(pg_catalog.=) any (array[pg_catalog.to_regproc('auth.note_revocation'),
                                                      pg_catalog.to_regproc('auth.invalidate_cached_state')]::pg_catalog.oid[])),
       exists (select from pg_catalog.pg_attribute a
               where a.attrelid operator(pg_catalog.=) c.oid
                 and a.attname operator(pg_catalog.=) 'issuer' and not a.attisdropped)
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid operator(pg_catalog.=) c.relnamespace
where n.nspname operator(pg_catalog.=) 'auth'
  and c.relname operator(pg_catalog.=) any (array['revoked_sessions', 'revoked_users', 'revoked_tokens'])
