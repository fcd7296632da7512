-- revoke_user.sql for a database not yet updated to 0.3.0: cut-offs for every issuer only
-- ($5 is not used).
insert into auth.revoked_users as u (user_id, revoked_before, others_revoked_before, keep_session_id, reason, expires_at)
select $1, case when $2::pg_catalog.uuid is null then c.cutoff end,
       case when $2::pg_catalog.uuid is not null then c.cutoff end,
       $2, $3, c.cutoff operator(pg_catalog.+) pg_catalog.make_interval(secs => $4)
from (select greatest(pg_catalog.clock_timestamp(),
                      pg_catalog.to_timestamp((pg_catalog.ceil($6 operator(pg_catalog.*) 1000000) operator(pg_catalog.+) 1)
                                              operator(pg_catalog./) 1000000)) as cutoff) as c
on conflict (user_id) do update
set revoked_before = case
        when excluded.keep_session_id is null
            then greatest(u.revoked_before, excluded.revoked_before)
        when u.keep_session_id is distinct from excluded.keep_session_id
            then greatest(u.revoked_before, u.others_revoked_before)
        else u.revoked_before end,
    others_revoked_before = case
        when excluded.keep_session_id is null then u.others_revoked_before
        when u.keep_session_id is distinct from excluded.keep_session_id
            then excluded.others_revoked_before
        else greatest(u.others_revoked_before, excluded.others_revoked_before) end,
    keep_session_id = case when excluded.keep_session_id is null
        then u.keep_session_id else excluded.keep_session_id end,
    reason = excluded.reason,
    revoked_at = excluded.revoked_at,
    expires_at = case when u.expires_at is null or excluded.expires_at is null then null
        else greatest(u.expires_at, excluded.expires_at) end
