-- revocation_lookup.sql for a database still at version 0.2.0, whose revoked_users has no
-- issuer column: its cut-offs hold at every issuer ($4 and $5 are not used).
select exists (select from auth.revoked_sessions s where s.session_id operator(pg_catalog.=) $1),
       exists (select from auth.revoked_tokens t where t.jti operator(pg_catalog.=) $2),
       a.found, a.revoked_before, a.others_revoked_before, a.keep_session_id,
       null::pg_catalog.bool, null::pg_catalog.float8, null::pg_catalog.float8, null::pg_catalog.uuid
from (select) as one
left join lateral (
    select true as found,
           pg_catalog.date_part('epoch', r.revoked_before) as revoked_before,
           pg_catalog.date_part('epoch', r.others_revoked_before) as others_revoked_before,
           r.keep_session_id
    from auth.revoked_users r
    where r.user_id operator(pg_catalog.=) $3
) as a on true
