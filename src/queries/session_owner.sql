-- Whose session $1 is.
select s.user_id from auth.sessions as s where s.id operator(pg_catalog.=) $1
