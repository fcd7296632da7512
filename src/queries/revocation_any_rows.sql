-- Whether any revocation table has a row. Through the primary keys' indexes: a sequential
-- scan would read every dead page a purge left behind until VACUUM runs.
select (select session_id from auth.revoked_sessions order by session_id limit 1) is not null
    or (select user_id from auth.revoked_users order by user_id limit 1) is not null
    or (select jti from auth.revoked_tokens order by jti limit 1) is not null
