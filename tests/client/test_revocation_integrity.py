"""Revocations that nobody can weaken, and settings that follow the bound identity - found by
an adversarial review of 0.3.0, as non-superusers (``app_user`` with tokens without a role
claim; ``key_admin`` as the admin):

* a holder of a stolen token cannot shorten how long its own revocation is kept (and so have
  the purge drop a later, stronger revocation of the same jti);
* a per-user cut-off never moves back: an admin's later revoke_user does not revive a token
  that signed itself out with an iat ahead of the database clock;
* a fractional iat falls under its own sign-out;
* a parallel query after sign_out in the same transaction neither raises nor so undoes it;
* the legacy request settings Supabase's helpers read first (request.jwt.claim.sub, .role,
  .email, request.jwt.claim) follow the bound identity like request.jwt.claims;
* request claims holding U+0000 are no identity (SQL casts would cut the text there).
"""

from __future__ import annotations

import json
import uuid

import pytest

from client_support import make_key, now
from conftest import APP_USER, KEY_ADMIN, raises_sqlstate

KID = "ri-k"
REVOKED = "invalid token: revoked"
# Supabase's SQL auth.uid() (before it read request.jwt.claims alone).
SUPABASE_UID = ("coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''), "
                "(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid")


def _uid() -> str:
    return str(uuid.uuid4())


class Env:
    def __init__(self, pg):
        self.pg = pg
        self.key = make_key("HS256", KID)
        pg.sql("select auth.add_key(%s, 'HS256', %s)", [KID, self.key.secret_text],
               user=KEY_ADMIN)

    def token(self, sub: str | None = None, iat_ahead: float = 0, ttl: int = 3600,
              **claims) -> str:
        t = now()
        payload = {"sub": sub or _uid(), "iat": t + iat_ahead, "exp": t + ttl}
        payload.update(claims)
        return self.key.sign(payload)

    def app(self):
        return self.pg.connect(APP_USER)

    def admin(self):
        return self.pg.connect(KEY_ADMIN)

    def set_database(self, name: str, value: str) -> None:
        self.pg.sql(f"alter database postgres set {name} = '{value}'")

    def refused(self, token: str) -> bool:
        with self.app() as conn:
            try:
                conn.execute("select auth.verify(%s)", [token])
            except Exception as error:  # noqa: BLE001 - the SQLSTATE is checked below
                assert getattr(error, "sqlstate", None) == "28000", error
                assert str(error).startswith(REVOKED), error
                return True
        return False


@pytest.fixture
def env(pg):
    return Env(pg)


def test_a_stolen_token_cannot_shorten_its_own_revocation(env):
    """The holder of a stolen token revoked its own jti with an expires_at in the past; the
    admin's revoke_token of the same jti then found the row and did nothing, and the next
    purge deleted it: the token verified again. A non-admin's expires_at is ignored (the row
    lives until the token's exp), and no later write ever shortens a revocation."""
    jti = f"stolen-{_uid()}"
    token = env.token(jti=jti)
    with env.app() as thief:
        thief.execute("begin")
        thief.execute("select auth.authenticate(%s)", [token])
        thief.execute("select auth.revoke_token(%s, '2000-01-01 00:00:00+00')", [jti])
        thief.execute("commit")
    expiry = ("select extract(epoch from expires_at) from auth.revoked_tokens where jti = %s")
    with env.admin() as admin:
        # The token's own exp, not 2000.
        assert float(admin.execute(expiry, [jti]).fetchone()[0]) > now() + 3000
        assert admin.execute("select auth.revoke_token(%s, '2001-01-01 00:00:00+00')",
                             [jti]).fetchone()[0] is False
        assert float(admin.execute(expiry, [jti]).fetchone()[0]) > now() + 3000
        # Without expires_at (and no max_token_lifetime) the admin's revocation is kept for
        # good: the longer one wins.
        assert admin.execute("select auth.revoke_token(%s)", [jti]).fetchone()[0] is False
        assert admin.execute(expiry, [jti]).fetchone()[0] is None
        admin.execute("select auth.purge_revocations()")
    assert env.refused(token)


def test_a_cut_off_never_moves_back(env):
    """A token issued ahead of the database clock (within the leeway) signed out globally:
    the cut-off is its iat. A later revoke_user by the admin (at the database's now, earlier
    than that iat) must not move the cut-off back and revive the signed-out token."""
    env.set_database("pg_session_auth.leeway", "60")
    user = _uid()
    token = env.token(user, iat_ahead=30, session_id=_uid())
    with env.app() as conn:
        conn.execute("begin")
        conn.execute("select auth.authenticate(%s)", [token])
        conn.execute("select auth.sign_out('global')")
        conn.execute("commit")
    assert env.refused(token)
    with env.admin() as admin:
        admin.execute("select auth.revoke_user(%s::uuid)", [user])
    assert env.refused(token)
    # ... nor does a later 'others' of another session of the same user.
    other = env.token(user, iat_ahead=31, session_id=_uid())
    with env.app() as conn:
        conn.execute("begin")
        conn.execute("select auth.authenticate(%s)", [other])
        conn.execute("select auth.sign_out('others')")
        conn.execute("commit")
    assert env.refused(token)


def test_a_fractional_iat_falls_under_its_own_sign_out(env):
    """Timestamps keep microseconds: a cut-off taken from iat = t + 20.0000005 was rounded
    down, so `iat <= cut-off` failed and the token survived its own global sign-out."""
    env.set_database("pg_session_auth.leeway", "60")
    t = now()
    token = env.key.sign({"sub": _uid(), "iat": t + 20.0000005, "exp": t + 3600})
    with env.app() as conn:
        conn.execute("begin")
        conn.execute("select auth.authenticate(%s)", [token])
        conn.execute("select auth.sign_out('global')")
        conn.execute("commit")
    assert env.refused(token)


def test_a_parallel_query_after_sign_out_does_not_undo_it(env, pg):
    """After sign_out in a transaction, the claim functions return NULL there (raising would
    abort the transaction and so undo the sign-out). Parallel workers did not know that the
    transaction had signed out, raised 28000 from a parallel scan, and the COMMIT became a
    rollback: the token stayed valid."""
    pg.sql("""
        drop table if exists public.par_notes;
        create table public.par_notes (id int, owner uuid);
        insert into public.par_notes select g, null from generate_series(1, 20000) g;
        alter table public.par_notes enable row level security;
        create or replace function public.my_uid() returns uuid
            language plpgsql stable parallel safe as $$ begin return auth.uid(); end $$;
        create policy par_notes_owner on public.par_notes for select using (owner = public.my_uid());
        grant select on public.par_notes to app_user;
    """)
    token = env.token(session_id=_uid())
    with env.app() as conn:
        conn.execute("begin")
        conn.execute("select auth.authenticate(%s)", [token])
        conn.execute("select auth.sign_out('local')")
        for name, value in (("parallel_setup_cost", "0"), ("parallel_tuple_cost", "0"),
                            ("min_parallel_table_scan_size", "0"),
                            ("max_parallel_workers_per_gather", "2")):
            conn.execute(f"set local {name} = {value}")
        plan = "\n".join(r[0] for r in conn.execute(
            "explain select count(*) from public.par_notes").fetchall())
        assert "Parallel Seq Scan" in plan, plan
        assert conn.execute("select count(*) from public.par_notes").fetchone()[0] == 0
        conn.execute("commit")
    assert env.refused(token)


@pytest.mark.parametrize("setting, claim", [("request.jwt.claim.sub", "sub"),
                                            ("request.jwt.claim.role", "role"),
                                            ("request.jwt.claim.email", "email"),
                                            ("request.jwt.claim", None)])
def test_legacy_request_settings_follow_the_bound_identity(env, setting, claim):
    """Supabase's helpers read request.jwt.claim.sub (and .role, .email, request.jwt.claim)
    before request.jwt.claims: a client that set them after auth.authenticate() made
    Supabase's auth.uid() return a victim. While an identity is bound they show the bound
    claims and refuse other values (42501)."""
    me, victim = _uid(), _uid()
    # The role claim names no role to switch to here; it is data (request.jwt.claim.role).
    env.set_database("pg_session_auth.role_claim", "app_role")
    token = env.token(me, email="me@example.com", role="reader")
    forged = json.dumps({"sub": victim}) if claim is None else victim
    with env.app() as conn:
        conn.execute("set request.jwt.claim.sub = %s" % json.dumps(victim).replace('"', "'"))
        conn.execute("begin")
        bound = conn.execute("select auth.authenticate(%s)", [token]).fetchone()[0]
        conn.execute("savepoint forge")
        with raises_sqlstate("42501"):
            conn.execute("select set_config(%s, %s, true)", [setting, forged])
        conn.execute("rollback to savepoint forge")
        shown = conn.execute("select current_setting(%s, true)", [setting]).fetchone()[0]
        expected = json.dumps(bound, separators=(",", ":")) if claim is None else bound[claim]
        if claim is None:
            assert json.loads(shown) == bound
        else:
            assert shown == expected
        assert str(conn.execute(f"select {SUPABASE_UID}").fetchone()[0]) == me
        conn.execute("commit")
        # No identity bound: the settings are the client's own again.
        assert conn.execute("select current_setting('request.jwt.claim.sub')").fetchone()[0] == victim


def test_request_claims_with_a_nul_character_are_no_identity(env):
    """In request mode the claims are whatever was set. With "\\u0000" in a string, SQL
    casts of auth.jwt() values cut the text there (a sub "<victim>\\u0000x" cast to uuid is
    the victim). Such claims are unparsable: no identity, and check_request refuses them."""
    env.set_database("pg_session_auth.claims_source", "request")
    victim = _uid()
    claims = '{"sub": "%s\\u0000x", "exp": %d}' % (victim, now() + 600)
    with env.app() as conn:
        conn.execute("begin")
        conn.execute("select set_config('request.jwt.claims', %s, true)", [claims])
        row = conn.execute("select auth.jwt(), auth.user_id(), auth.uid()").fetchone()
        assert row == (None, None, None)
        with raises_sqlstate("PT401"):
            conn.execute("select auth.check_request()")
        conn.execute("rollback")
