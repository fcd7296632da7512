-- Ends sessions: session $1, or every session of user $2 (but $3, when given) at issuer $5
-- (NULL: at every issuer), with reason $4. Returns the ids of the sessions it ended.
update auth.sessions as s
set ended_at = pg_catalog.clock_timestamp(), end_reason = $4, updated_at = pg_catalog.clock_timestamp()
where s.ended_at is null
  and (s.id operator(pg_catalog.=) $1
       or s.user_id operator(pg_catalog.=) $2 and s.id is distinct from $3
          and ($5::pg_catalog.text is null or s.issuer operator(pg_catalog.=) $5))
returning s.id
