-- Retires key $1 (when active): returns its algorithm.
update auth.keys as k set retired_at = pg_catalog.now()
where k.kid operator(pg_catalog.=) $1 and k.retired_at is null
returning k.alg
