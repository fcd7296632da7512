-- Every signing key with its state (revoked once its verification key is retired).
select m.kid, k.alg,
       case when k.retired_at is not null then 'revoked' else m.state end,
       m.created_at
from auth.signing_key_material as m
join auth.keys as k on k.kid operator(pg_catalog.=) m.kid
order by m.created_at, m.kid
