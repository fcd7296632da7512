-- One token's missing revocation answers: $1 session, $2 jti, $3 subject at every issuer,
-- $4 subject at issuer $5 (each NULL when not needed). Cut-offs as Unix seconds.
select exists (select from auth.revoked_sessions s where s.session_id operator(pg_catalog.=) $1),
       exists (select from auth.revoked_tokens t where t.jti operator(pg_catalog.=) $2),
       a.found, a.revoked_before, a.others_revoked_before, a.keep_session_id,
       i.found, i.revoked_before, i.others_revoked_before, i.keep_session_id
from (select) as one
left join lateral (
    select true as found,
           pg_catalog.date_part('epoch', r.revoked_before) as revoked_before,
           pg_catalog.date_part('epoch', r.others_revoked_before) as others_revoked_before,
           r.keep_session_id
    from auth.revoked_users r
    where r.user_id operator(pg_catalog.=) $3 and r.issuer operator(pg_catalog.=) ''
) as a on true
left join lateral (
    select true as found,
           pg_catalog.date_part('epoch', r.revoked_before) as revoked_before,
           pg_catalog.date_part('epoch', r.others_revoked_before) as others_revoked_before,
           r.keep_session_id
    from auth.revoked_users r
    where r.user_id operator(pg_catalog.=) $4 and r.issuer operator(pg_catalog.=) $5
) as i on true
