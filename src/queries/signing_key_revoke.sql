-- Revokes signing key $1 with its verification key: returns the state it had.
update auth.signing_key_material as m
set state = 'revoked', state_changed_at = pg_catalog.now()
from (select c.state from auth.signing_key_material as c
      where c.kid operator(pg_catalog.=) $1) as previous
where m.kid operator(pg_catalog.=) $1
returning previous.state
