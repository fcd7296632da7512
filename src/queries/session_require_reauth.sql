-- A rule asked session $1 to step up: its access tokens carry reauth_required until
-- auth.update_session_aal().
update auth.sessions as s set reauth_required = true where s.id operator(pg_catalog.=) $1
