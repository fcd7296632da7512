-- Whose session $1 is: its user and issuer.
select s.user_id, s.issuer from auth.sessions as s where s.id operator(pg_catalog.=) $1
