-- The key in use: kid, algorithm and private material (one row at most).
select k.kid, k.alg, m.private_key
from auth.signing_key_material as m
join auth.keys as k on k.kid operator(pg_catalog.=) m.kid
where m.state operator(pg_catalog.=) 'in_use' and k.retired_at is null
