"""Revocation, against the real server, as non-superusers: auth.revoke_session / revoke_user /
revoke_token / sign_out / is_revoked / purge_revocations, who may call them, when a
revocation takes effect in other connections, purging, request mode, pg_dump, and bounded
memory.

Callers are the roles of a PostgREST-style deployment: ``authenticator`` (LOGIN NOINHERIT,
granted ``anon`` and ``authenticated``; auth.authenticate() switches it to ``authenticated``)
and ``key_admin`` (a member of session_auth_admin). ``postgres`` is used only to set things up
and to simulate the passing of time.

The timing rule under test: a revocation is in force inside the revoking transaction at once
(from its next statement), in every other backend from its next statement after COMMIT, and
not at all if the revoking transaction (or savepoint) rolls back.
"""

from __future__ import annotations

import json
import math
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass

import psycopg
import pytest

from client_support import make_key, now, split
from conftest import PG_BIN, APP_USER, KEY_ADMIN, SAFETY_OPTIONS, raises_sqlstate, running_cluster

AUTHENTICATOR = "authenticator"
KID = "rev-k"
REVOKED = "invalid token: revoked"
OK = "ok"
REVOKED_VERDICT = "28000 " + REVOKED
TABLES = ("auth.revoked_sessions", "auth.revoked_users", "auth.revoked_tokens")
RESTORED_DB = "restored_revocations"


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["shared", "session"],
                ids=["with-filter", "without-filter"])
def cluster(request):
    """Every test here runs twice: with the library in shared_preload_libraries (the shared
    revocation filter screens tokens first) and with session_preload_libraries (no filter:
    every new token is looked up)."""
    with running_cluster(preload=request.param) as c:
        yield c


@pytest.fixture(scope="module")
def roles(cluster):
    """anon / authenticated / authenticator, created once in this module's cluster."""
    cluster.sql("create role anon nologin")
    cluster.sql("create role authenticated nologin")
    cluster.sql(f"create role {AUTHENTICATOR} login noinherit")
    cluster.sql(f"grant anon, authenticated to {AUTHENTICATOR}")
    return cluster


def _uid() -> str:
    return str(uuid.uuid4())


@dataclass
class Env:
    pg: object
    key: object

    # connections
    def user(self, autocommit: bool = True) -> psycopg.Connection:
        return self.pg.connect(AUTHENTICATOR, autocommit=autocommit)

    def admin(self, autocommit: bool = True) -> psycopg.Connection:
        return self.pg.connect(KEY_ADMIN, autocommit=autocommit)

    def superuser(self) -> psycopg.Connection:
        return self.pg.connect("postgres")

    # tokens
    def token(self, sub: str | None = None, **kw) -> str:
        """A token of `sub`, valid for an hour; a keyword set to None leaves that claim out."""
        t = now()
        payload = {"sub": sub if sub is not None else _uid(), "role": "authenticated",
                   "iat": t, "exp": t + 3600}
        payload.update(kw)
        payload = {k: v for k, v in payload.items() if v is not None}
        return self.key.sign(payload)

    # actions
    def sign_out(self, token: str, scope: str | None = "local") -> None:
        """Authenticates with `token` and signs out in one committed transaction. After the
        sign-out the transaction's own identity is simply gone (NULL), never an error: an
        error would abort, and so undo, the sign-out."""
        conn = self.user()
        conn.execute("begin")
        conn.execute("select auth.authenticate(%s)", [token])
        if scope is None:
            conn.execute("select auth.sign_out()")
        else:
            conn.execute("select auth.sign_out(%s)", [scope])
        if scope in (None, "local", "global"):
            assert conn.execute("select auth.uid(), auth.user_id(), auth.jwt()").fetchone() == (
                None, None, None)
        conn.execute("commit")
        conn.close()

    def cutoff(self, sub: str, column: str = "revoked_before") -> float:
        rows = self.pg.sql(
            f"select extract(epoch from {column})::float8 from auth.revoked_users "
            "where user_id = %s", [sub])
        return rows[0][0]


@pytest.fixture
def env(pg, roles):
    with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres",
                         autocommit=True, options=SAFETY_OPTIONS) as conn:
        conn.execute("truncate " + ", ".join(TABLES))
        conn.execute(f"alter role {AUTHENTICATOR} reset all")
        conn.execute(f"drop database if exists {RESTORED_DB}")
    key = make_key("HS256", KID)
    pg.sql("select auth.add_key(%s, 'HS256', %s)", [KID, key.secret_text], user=KEY_ADMIN)
    return Env(pg, key)


def verdict(conn, token: str) -> str:
    """'ok' or 'SQLSTATE message' - never raises, so it may run inside open transactions."""
    return conn.execute("select public.try_verify(%s)", [token]).fetchone()[0]


def verdicts(conn, tokens) -> list[str]:
    return [verdict(conn, t) for t in tokens]


def assert_authenticate_revoked(conn, token: str) -> None:
    conn.execute("begin")
    with raises_sqlstate("28000", REVOKED):
        conn.execute("select auth.authenticate(%s)", [token])
    conn.execute("rollback")
    with raises_sqlstate("28000", REVOKED):
        conn.execute("select auth.verify(%s)", [token])


def count_rows(env, table: str) -> int:
    return env.pg.sql(f"select count(*) from {table}")[0][0]


# -- 1. the functions ------------------------------------------------------------------------


def test_revoke_session(env):
    u, s1, s2 = _uid(), _uid(), _uid()
    t1 = env.token(u, session_id=s1)
    t1b = env.token(u, session_id=s1, jti="another-token-of-s1")
    by_sid = env.token(u, sid=s1)                       # OIDC's sid names the same session
    t2 = env.token(u, session_id=s2)
    user, admin = env.user(), env.admin()
    assert verdicts(user, [t1, t1b, by_sid, t2]) == [OK] * 4

    assert admin.execute("select auth.revoke_session(%s, 'stolen laptop')", [s1]).fetchone()[0] is True
    assert admin.execute("select auth.revoke_session(%s)", [s1]).fetchone()[0] is False  # already
    assert verdicts(user, [t1, t1b, by_sid, t2]) == [REVOKED_VERDICT] * 3 + [OK]
    assert_authenticate_revoked(user, t1)
    assert_authenticate_revoked(user, by_sid)

    row = env.pg.sql("select reason, expires_at, revoked_at <= now() from auth.revoked_sessions "
                     "where session_id = %s", [s1])
    assert row == [("stolen laptop", None, True)]   # max_token_lifetime = 0: kept forever


def test_revoke_user_by_text_and_by_uuid(env):
    text_sub, uuid_sub, other = "github|4242", _uid(), _uid()
    a = env.token(text_sub, session_id=_uid())
    b = env.token(uuid_sub, session_id=_uid())
    b_no_session = env.token(uuid_sub)
    c = env.token(other, session_id=_uid())
    user, admin = env.user(), env.admin()
    assert verdicts(user, [a, b, b_no_session, c]) == [OK] * 4

    admin.execute("select auth.revoke_user(%s::text, 'abuse')", [text_sub])
    assert verdicts(user, [a, b, c]) == [REVOKED_VERDICT, OK, OK]
    admin.execute("select auth.revoke_user(%s::uuid)", [uuid_sub])
    assert verdicts(user, [a, b, b_no_session, c]) == [REVOKED_VERDICT] * 3 + [OK]
    assert_authenticate_revoked(user, b)
    # The uuid overload stores the canonical text form the sub claim is matched against.
    assert env.pg.sql("select user_id, keep_session_id, others_revoked_before "
                      "from auth.revoked_users order by user_id") == sorted(
        [(text_sub, None, None), (uuid_sub, None, None)])

    # A cut-off revokes what was issued at or before it; later tokens are accepted.
    cut = env.cutoff(uuid_sub)
    later = env.token(uuid_sub, session_id=_uid(), iat=math.floor(cut) + 1)
    same_second = env.token(uuid_sub, session_id=_uid(), iat=math.floor(cut))
    no_iat = env.token(uuid_sub, session_id=_uid(), iat=None)
    assert verdicts(user, [later, same_second, no_iat]) == [OK, REVOKED_VERDICT, REVOKED_VERDICT]

    for bad in ("", "x" * 1025):
        with raises_sqlstate("22023"):
            admin.execute("select auth.revoke_user(%s::text)", [bad])


def test_revoke_token_by_jti(env):
    u, s = _uid(), _uid()
    j1, j2 = "jti-" + _uid(), "jti-" + _uid()
    t1 = env.token(u, session_id=s, jti=j1)
    t2 = env.token(u, session_id=s, jti=j2)           # same session, another token
    user, admin = env.user(), env.admin()
    assert verdicts(user, [t1, t2]) == [OK, OK]

    assert admin.execute("select auth.revoke_token(%s)", [j1]).fetchone()[0] is True
    assert admin.execute("select auth.revoke_token(%s)", [j1]).fetchone()[0] is False
    assert verdicts(user, [t1, t2]) == [REVOKED_VERDICT, OK]
    assert_authenticate_revoked(user, t1)

    j3 = "jti-" + _uid()
    assert admin.execute("select auth.revoke_token(%s, '2099-01-01 00:00:00+00')",
                         [j3]).fetchone()[0] is True
    assert env.pg.sql("select jti, expires_at is null, extract(year from expires_at at time zone 'UTC') "
                      "from auth.revoked_tokens order by expires_at nulls first") == [
        (j1, True, None), (j3, False, 2099)]

    for bad in ("", "j" * 1025):
        with raises_sqlstate("22023"):
            admin.execute("select auth.revoke_token(%s)", [bad])


def test_sign_out_local(env):
    u, v = _uid(), _uid()
    s1, s2, s3, sv = _uid(), _uid(), _uid(), _uid()
    t1, t2, t3 = (env.token(u, session_id=s) for s in (s1, s2, s3))
    t1_refreshed = env.token(u, session_id=s1, iat=now() + 1)   # a later token of session 1
    tv = env.token(v, session_id=sv)
    user = env.user()
    assert verdicts(user, [t1, t1_refreshed, t2, t3, tv]) == [OK] * 5

    env.sign_out(t1)                                 # default scope: local
    assert verdicts(user, [t1, t1_refreshed, t2, t3, tv]) == [REVOKED_VERDICT] * 2 + [OK] * 3
    assert env.pg.sql("select session_id::text, reason from auth.revoked_sessions") == [
        (s1, "sign_out(local)")]
    assert count_rows(env, "auth.revoked_users") == 0

    env.sign_out(t2, "local")
    assert verdicts(user, [t1, t2, t3, tv]) == [REVOKED_VERDICT] * 2 + [OK] * 2


def test_sign_out_local_uses_sid_then_jti(env):
    u = _uid()
    sid = _uid()
    by_sid = env.token(u, sid=sid)
    by_sid_too = env.token(u, session_id=sid)
    with_jti, other_jti = env.token(u, jti="j-1"), env.token(u, jti="j-2")
    user = env.user()

    env.sign_out(by_sid, "local")                    # no session_id: the sid claim
    assert verdicts(user, [by_sid, by_sid_too, with_jti]) == [REVOKED_VERDICT] * 2 + [OK]

    env.sign_out(with_jti, "local")                  # neither: just this token, by its jti
    assert verdicts(user, [with_jti, other_jti]) == [REVOKED_VERDICT, OK]
    assert env.pg.sql("select jti, reason, extract(epoch from expires_at)::bigint "
                      "from auth.revoked_tokens") == [
        ("j-1", "sign_out(local)", split(with_jti)[1]["exp"])]


def test_sign_out_global(env):
    u, v = _uid(), _uid()
    tokens = [env.token(u, session_id=_uid()) for _ in range(3)]
    no_session = env.token(u)
    tv = env.token(v, session_id=_uid())
    user = env.user()
    assert verdicts(user, tokens + [no_session, tv]) == [OK] * 5

    env.sign_out(tokens[1], "global")
    assert verdicts(user, tokens + [no_session, tv]) == [REVOKED_VERDICT] * 4 + [OK]
    for t in tokens:
        assert_authenticate_revoked(user, t)
    # A token issued after the cut-off (signing in again) is accepted.
    cut = env.cutoff(u)
    fresh = env.token(u, session_id=_uid(), iat=math.floor(cut) + 1)
    assert verdict(user, fresh) == OK
    user.execute("begin")
    assert user.execute("select auth.authenticate(%s)->>'sub', auth.uid()::text",
                        [fresh]).fetchone() == (u, u)
    user.execute("commit")


def test_sign_out_others(env):
    u, v = _uid(), _uid()
    sa, sb, sc = _uid(), _uid(), _uid()
    a, b, c = (env.token(u, session_id=s) for s in (sa, sb, sc))
    a_again = env.token(u, session_id=sa, iat=now() - 5)   # another token of this session
    no_session = env.token(u)
    tv = env.token(v, session_id=_uid())
    user = env.user()

    conn = env.user()
    conn.execute("begin")
    conn.execute("select auth.authenticate(%s)", [a])
    conn.execute("select auth.sign_out('others')")
    # This session is spared, so the identity is intact in the signing-out transaction.
    assert conn.execute("select auth.uid()::text, auth.session_id()::text").fetchone() == (u, sa)
    conn.execute("commit")

    assert verdicts(user, [a, a_again, b, c, no_session, tv]) == [
        OK, OK, REVOKED_VERDICT, REVOKED_VERDICT, REVOKED_VERDICT, OK]
    assert env.pg.sql("select revoked_before, keep_session_id::text, others_revoked_before is not null "
                      "from auth.revoked_users where user_id = %s", [u]) == [(None, sa, True)]
    # Signing in again after the cut-off, in another session, works.
    later = env.token(u, session_id=_uid(), iat=math.floor(env.cutoff(u, "others_revoked_before")) + 1)
    assert verdict(user, later) == OK


def test_sign_out_others_then_global(env):
    u, v = _uid(), _uid()
    sa, sb = _uid(), _uid()
    a, b = env.token(u, session_id=sa), env.token(u, session_id=sb)
    tv = env.token(v, session_id=_uid())
    user = env.user()

    env.sign_out(a, "others")
    assert verdicts(user, [a, b, tv]) == [OK, REVOKED_VERDICT, OK]
    env.sign_out(a, "global")
    assert verdicts(user, [a, b, tv]) == [REVOKED_VERDICT, REVOKED_VERDICT, OK]

    cut = max(env.cutoff(u), env.cutoff(u, "others_revoked_before"))
    a_new = env.token(u, session_id=sa, iat=math.floor(cut) + 1)
    b_new = env.token(u, session_id=sb, iat=math.floor(cut) + 1)
    assert verdicts(user, [a_new, b_new, a, b]) == [OK, OK, REVOKED_VERDICT, REVOKED_VERDICT]


def test_sign_out_others_from_a_then_others_from_b(env):
    """'others' from A, then 'others' from B: what A's sign-out revoked stays revoked (B's old
    token included), B's current token is kept, A's tokens are revoked. Fractional iat values
    (allowed NumericDates) give tokens issued between the two sign-outs without sleeping."""
    u, v = _uid(), _uid()
    sa, sb, sc = _uid(), _uid(), _uid()
    a1, b1, c1 = (env.token(u, session_id=s, iat=now() - 10) for s in (sa, sb, sc))
    tv = env.token(v, session_id=_uid())
    user = env.user()

    env.sign_out(a1, "others")
    t_a = env.cutoff(u, "others_revoked_before")
    assert verdicts(user, [a1, b1, c1]) == [OK, REVOKED_VERDICT, REVOKED_VERDICT]

    # Issued after A's sign-out: session B signs in again, A refreshes its token.
    b2 = env.token(u, session_id=sb, iat=time.time())
    a2 = env.token(u, session_id=sa, iat=time.time())
    c2 = env.token(u, session_id=sc, iat=time.time())
    assert verdicts(user, [a2, b2, c2]) == [OK, OK, OK]

    env.sign_out(b2, "others")
    t_b = env.cutoff(u, "others_revoked_before")
    assert t_b > t_a
    assert verdicts(user, [a1, a2, b1, b2, c1, c2, tv]) == [
        REVOKED_VERDICT,   # A's tokens: revoked by B
        REVOKED_VERDICT,
        REVOKED_VERDICT,   # B's old token: revoked by A, and stays so
        OK,                # B's current token: kept
        REVOKED_VERDICT,
        REVOKED_VERDICT,
        OK,                # another user: untouched
    ]
    # A's cut-off is folded into the all-sessions cut-off.
    assert env.pg.sql("select extract(epoch from revoked_before)::float8, keep_session_id::text "
                      "from auth.revoked_users where user_id = %s", [u]) == [(t_a, sb)]


def test_tokens_without_iat_fall_under_any_applicable_cutoff(env):
    u = _uid()
    sa, sb = _uid(), _uid()
    a = env.token(u, session_id=sa)
    a_no_iat = env.token(u, session_id=sa, iat=None)
    b_no_iat = env.token(u, session_id=sb, iat=None)
    nosession_no_iat = env.token(u, iat=None)
    other_no_iat = env.token(_uid(), session_id=_uid(), iat=None)
    user = env.user()
    assert verdicts(user, [a_no_iat, b_no_iat, nosession_no_iat, other_no_iat]) == [OK] * 4

    env.sign_out(a, "others")                        # spares session A only
    assert verdicts(user, [a_no_iat, b_no_iat, nosession_no_iat, other_no_iat]) == [
        OK, REVOKED_VERDICT, REVOKED_VERDICT, OK]
    env.pg.sql("select auth.revoke_user(%s::uuid)", [u], user=KEY_ADMIN)
    assert verdicts(user, [a_no_iat, b_no_iat, nosession_no_iat, other_no_iat]) == [
        REVOKED_VERDICT, REVOKED_VERDICT, REVOKED_VERDICT, OK]


def test_sign_out_errors(env):
    u = _uid()
    user, admin = env.user(), env.admin()
    # No identity bound: 28000, for a plain caller and for an admin alike.
    for conn in (user, admin):
        for scope in ("local", "global", "others"):
            with raises_sqlstate("28000"):
                conn.execute("select auth.sign_out(%s)", [scope])
        with raises_sqlstate("28000"):
            conn.execute("select auth.sign_out()")

    def attempt(token, scope, sqlstate):
        user.execute("begin")
        user.execute("select auth.authenticate(%s)", [token])
        with raises_sqlstate(sqlstate) as caught:
            user.execute("select auth.sign_out(%s)", [scope])
        user.execute("rollback")
        return caught

    full = env.token(u, session_id=_uid(), jti="j")
    for scope in ("LOCAL", "everywhere", "", "others "):
        caught = attempt(full, scope, "22023")
        assert "unknown sign-out scope" in caught.message
    assert "session_id or sid" in attempt(env.token(u, jti="j"), "others", "22023").message
    no_sub = env.key.sign({"session_id": _uid(), "iat": now(), "exp": now() + 3600,
                           "role": "authenticated"})
    assert "sub claim" in attempt(no_sub, "global", "22023").message
    assert "sub claim" in attempt(no_sub, "others", "22023").message
    bare = env.token(u)                              # no session_id, sid or jti
    assert "session_id, sid or jti" in attempt(bare, "local", "22023").message
    assert sum(count_rows(env, t) for t in TABLES) == 0


def test_sign_out_in_a_transaction_that_rolls_back_revokes_nothing(env):
    t = env.token(_uid(), session_id=_uid())
    conn, other = env.user(), env.user()
    conn.execute("begin")
    conn.execute("select auth.authenticate(%s)", [t])
    conn.execute("select auth.sign_out('global')")
    assert conn.execute("select auth.uid()").fetchone()[0] is None
    assert verdict(conn, t) == REVOKED_VERDICT      # in force in its own transaction
    conn.execute("rollback")
    assert verdict(conn, t) == OK
    assert verdict(other, t) == OK
    assert sum(count_rows(env, t) for t in TABLES) == 0


def test_is_revoked(env):
    """Answers for an admin (anyone else may ask only about their own subject: see
    test_sign_out_semantics.py)."""
    u, s = _uid(), _uid()
    user = env.admin()

    def claims_of(**kw):
        return json.dumps({"sub": u, "iat": now(), **kw})

    q = "select auth.is_revoked(%s::jsonb)"
    assert user.execute(q, [claims_of(session_id=s)]).fetchone()[0] is False
    env.pg.sql("select auth.revoke_session(%s)", [s], user=KEY_ADMIN)
    assert user.execute(q, [claims_of(session_id=s)]).fetchone()[0] is True
    assert user.execute(q, [claims_of(sid=s)]).fetchone()[0] is True
    assert user.execute(q, [claims_of(session_id=_uid())]).fetchone()[0] is False
    env.pg.sql("select auth.revoke_token('jj')", user=KEY_ADMIN)
    assert user.execute(q, [json.dumps({"jti": "jj"})]).fetchone()[0] is True
    env.pg.sql("select auth.revoke_user(%s::uuid)", [u], user=KEY_ADMIN)
    assert user.execute(q, [json.dumps({"sub": u})]).fetchone()[0] is True          # no iat
    assert user.execute(q, [json.dumps({"sub": u, "iat": now() + 5})]).fetchone()[0] is False
    with raises_sqlstate("22004"):
        user.execute("select auth.is_revoked(null)")
    for bad in ("[]", "1", '"x"', "null"):
        with raises_sqlstate("22023"):
            user.execute(q, [bad])


# -- 2. permissions ----------------------------------------------------------------------------


def test_plain_user_may_revoke_only_their_own(env):
    me, them = _uid(), _uid()
    my_session, their_session = _uid(), _uid()
    mine = env.token(me, session_id=my_session, jti="my-jti")
    theirs = env.token(them, session_id=their_session, jti="their-jti")
    conn = env.user()

    def as_me(statement, params, token=mine):
        conn.execute("begin")
        conn.execute("select auth.authenticate(%s)", [token])
        assert conn.execute("select current_user").fetchone()[0] == "authenticated"
        try:
            return conn.execute(statement, params).fetchone()
        finally:
            conn.execute("rollback")

    for statement, params in (
        ("select auth.revoke_session(%s)", [their_session]),
        ("select auth.revoke_user(%s::uuid)", [them]),
        ("select auth.revoke_user(%s::text)", [them]),
        ("select auth.revoke_token(%s)", ["their-jti"]),
        ("select auth.revoke_token(%s)", ["my-other-jti"]),   # not the bound token's jti
    ):
        with raises_sqlstate("42501") as caught:
            as_me(statement, params)
        assert caught.message.startswith("permission denied to revoke another user's")
        # Without an identity (no auth.authenticate), the same: and even for one's own ids.
        with raises_sqlstate("42501"):
            conn.execute(statement, params)
    for statement, params in (("select auth.revoke_session(%s)", [my_session]),
                              ("select auth.revoke_user(%s::uuid)", [me]),
                              ("select auth.revoke_token(%s)", ["my-jti"])):
        with raises_sqlstate("42501"):
            conn.execute(statement, params)
    app = env.pg.connect(APP_USER)
    with raises_sqlstate("42501"):
        app.execute("select auth.revoke_session(%s)", [their_session])
    assert sum(count_rows(env, t) for t in TABLES) == 0
    assert verdict(conn, theirs) == OK

    # One's own: allowed (committed each time).
    conn.execute("begin")
    conn.execute("select auth.authenticate(%s)", [mine])
    assert conn.execute("select auth.revoke_token('my-jti')").fetchone()[0] is True
    conn.execute("commit")
    assert verdict(conn, mine) == REVOKED_VERDICT
    mine2 = env.token(me, session_id=my_session, jti="my-jti-2", iat=now() + 1)
    conn.execute("begin")
    conn.execute("select auth.authenticate(%s)", [mine2])
    assert conn.execute("select auth.revoke_session(%s)", [my_session]).fetchone()[0] is True
    conn.execute("commit")
    assert verdict(conn, mine2) == REVOKED_VERDICT
    mine3 = env.token(me, session_id=_uid())
    conn.execute("begin")
    conn.execute("select auth.authenticate(%s)", [mine3])
    conn.execute("select auth.revoke_user(%s::uuid, 'me')", [me])
    conn.execute("commit")
    assert verdict(conn, mine3) == REVOKED_VERDICT
    mine4 = env.token("text-sub-me", session_id=_uid())
    conn.execute("begin")
    conn.execute("select auth.authenticate(%s)", [mine4])
    conn.execute("select auth.revoke_user('text-sub-me')")
    conn.execute("commit")
    assert verdict(conn, mine4) == REVOKED_VERDICT
    assert verdict(conn, theirs) == OK               # the other user untouched


def test_plain_roles_cannot_read_the_tables_or_purge(env):
    conn = env.user()
    app = env.pg.connect(APP_USER)
    authenticated = env.user()
    authenticated.execute("begin")
    authenticated.execute("select auth.authenticate(%s)", [env.token(_uid(), session_id=_uid())])
    authenticated.execute("savepoint s")
    for c in (conn, app, authenticated):
        for table in TABLES:
            for statement in (f"select * from {table}", f"select count(*) from {table}",
                              f"delete from {table}", f"truncate {table}"):
                if c is authenticated:
                    c.execute("rollback to savepoint s")
                with raises_sqlstate("42501"):
                    c.execute(statement)
        if c is authenticated:
            c.execute("rollback to savepoint s")
        with raises_sqlstate("42501"):
            c.execute("select auth.purge_revocations()")
    authenticated.execute("rollback")


def test_admin_may_revoke_anything_read_the_tables_and_purge(env):
    admin = env.admin()
    assert admin.execute("select auth.revoke_session(%s)", [_uid()]).fetchone()[0] is True
    admin.execute("select auth.revoke_user('somebody')")
    assert admin.execute("select auth.revoke_token('some-jti')").fetchone()[0] is True
    for table in TABLES:
        assert admin.execute(f"select count(*) from {table}").fetchone()[0] == 1
        with raises_sqlstate("42501"):                # reading, not writing by hand
            admin.execute(f"delete from {table}")
    assert admin.execute("select auth.purge_revocations()").fetchone()[0] == 0  # nothing expired
    # A superuser is an admin too.
    assert env.pg.sql("select auth.revoke_session(%s)", [_uid()])[0][0] is True


# -- 3. timing across connections -----------------------------------------------------------


def test_revocation_timing_across_connections(env):
    observers = [env.user() for _ in range(3)]        # other backends, some in transactions
    b = env.admin()

    def seen(token):
        return {verdict(o, token) for o in observers}

    # (a) open transaction, then COMMIT.
    s = _uid()
    t = env.token(_uid(), session_id=s)
    assert seen(t) == {OK}                            # caches warm
    observers[1].execute("begin")                     # a read-committed transaction
    observers[2].execute("begin isolation level repeatable read")
    assert verdict(observers[2], t) == OK             # its snapshot is taken now
    b.execute("begin")
    assert verdict(b, t) == OK
    assert b.execute("select auth.revoke_session(%s)", [s]).fetchone()[0] is True
    assert verdict(b, t) == REVOKED_VERDICT           # in force in B's transaction at once
    with raises_sqlstate("28000", REVOKED):           # auth.verify too (savepoint keeps B alive)
        b.execute("savepoint v")
        b.execute("select auth.verify(%s)", [t])
    b.execute("rollback to savepoint v")
    assert seen(t) == {OK}                            # not yet anywhere else
    assert seen(t) == {OK}
    b.execute("commit")
    assert seen(t) == {REVOKED_VERDICT}               # everywhere, from the next statement,
    observers[1].execute("commit")                    # inside open transactions too (even
    observers[2].execute("commit")                    # REPEATABLE READ ones)

    # (b) ROLLBACK: never in force outside B, and gone in B too.
    s = _uid()
    t = env.token(_uid(), session_id=s)
    assert seen(t) == {OK}
    b.execute("begin")
    b.execute("select auth.revoke_session(%s)", [s])
    assert verdict(b, t) == REVOKED_VERDICT
    assert seen(t) == {OK}
    b.execute("rollback")
    assert seen(t) == {OK}
    assert verdict(b, t) == OK                        # B's own cache dropped on rollback

    # (c) ROLLBACK TO SAVEPOINT, then COMMIT: not revoked.
    s = _uid()
    t = env.token(_uid(), session_id=s)
    b.execute("begin")
    assert verdict(b, t) == OK
    b.execute("savepoint sp")
    assert b.execute("select auth.revoke_session(%s)", [s]).fetchone()[0] is True
    assert verdict(b, t) == REVOKED_VERDICT
    b.execute("rollback to savepoint sp")
    assert verdict(b, t) == OK
    b.execute("commit")
    assert seen(t) == {OK}
    assert verdict(b, t) == OK
    assert env.pg.sql("select count(*) from auth.revoked_sessions where session_id = %s", [s]) == [(0,)]

    # (d) user cut-offs and jti revocations follow the same rule.
    u, j = _uid(), "jti-" + _uid()
    tu, tj = env.token(u, session_id=_uid()), env.token(_uid(), jti=j)
    assert seen(tu) == {OK} and seen(tj) == {OK}
    b.execute("begin")
    b.execute("select auth.revoke_user(%s::uuid)", [u])
    b.execute("select auth.revoke_token(%s)", [j])
    assert verdicts(b, [tu, tj]) == [REVOKED_VERDICT] * 2
    assert seen(tu) == {OK} and seen(tj) == {OK}
    b.execute("commit")
    assert seen(tu) == {REVOKED_VERDICT} and seen(tj) == {REVOKED_VERDICT}


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
def test_open_authenticated_transaction_sees_a_committed_revocation(env, isolation):
    """A holds an authenticated transaction open across B's COMMIT of a revocation of A's
    session. Documented behaviour: A's NEXT statement sees it - auth.uid() (and every claim
    function) raises 28000 'invalid token: revoked', which aborts A's transaction. That holds
    in REPEATABLE READ too: revocations are looked up at the latest snapshot, not at the
    transaction's snapshot, so a long transaction cannot outlive a revocation."""
    u, s = _uid(), _uid()
    t = env.token(u, session_id=s)
    a, b = env.user(), env.admin()
    a.execute(f"begin isolation level {isolation}")
    assert a.execute("select auth.authenticate(%s)->>'sub'", [t]).fetchone()[0] == u
    assert a.execute("select auth.uid()::text").fetchone()[0] == u

    b.execute("begin")
    b.execute("select auth.revoke_session(%s)", [s])
    assert a.execute("select auth.uid()::text, auth.session_id()::text").fetchone() == (u, s)
    b.execute("commit")

    with raises_sqlstate("28000", REVOKED) as caught:
        a.execute("select auth.uid()")
    assert caught.hint == "Sign in again to get a new token."
    a.execute("rollback")

    # The same with the other claim functions (one transaction each: the error aborts it).
    for fn in ("auth.jwt()", "auth.user_id()", "auth.role()", "auth.email()",
               "auth.session_id()"):
        t2 = env.token(u, session_id=_uid())
        a.execute(f"begin isolation level {isolation}")
        a.execute("select auth.authenticate(%s)", [t2])
        a.execute(f"select {fn}")
        b.execute("select auth.revoke_user(%s::uuid)", [u])   # autocommit
        with raises_sqlstate("28000", REVOKED):
            a.execute(f"select {fn}")
        a.execute("rollback")
        env.pg.sql("delete from auth.revoked_users")


# -- 4. purge ----------------------------------------------------------------------------------


def test_max_token_lifetime_and_purge(env):
    su = env.superuser()
    admin = env.admin()
    # Before the setting: revocations are kept forever (expires_at NULL).
    kept_session = _uid()
    admin.execute("select auth.revoke_session(%s)", [kept_session])
    admin.execute("select auth.revoke_user('kept-user')")
    admin.execute("select auth.revoke_token('kept-jti')")
    assert su.execute("select count(*) from auth.revoked_sessions where expires_at is null").fetchone()[0] == 1

    su.execute("alter database postgres set pg_session_auth.max_token_lifetime = 7200")
    env.pg.close_connections()
    user, admin, su = env.user(), env.admin(), env.superuser()
    assert su.execute("show pg_session_auth.max_token_lifetime").fetchone()[0] == "2h"

    # Tokens need iat, and exp - iat <= 7200.
    t = now()
    assert verdict(user, env.token(_uid(), iat=t, exp=t + 7200)) == OK
    assert verdict(user, env.token(_uid(), iat=None, exp=t + 60)) == "28000 invalid token: missing claim"
    assert verdict(user, env.token(_uid(), iat=t, exp=t + 7201)) == "28000 invalid token: lifetime too long"

    s1, s2, u1, u2 = _uid(), _uid(), _uid(), _uid()
    admin.execute("select auth.revoke_session(%s)", [s1])
    admin.execute("select auth.revoke_session(%s)", [s2])
    admin.execute("select auth.revoke_user(%s::uuid)", [u1])
    admin.execute("select auth.revoke_user(%s::uuid)", [u2])
    admin.execute("select auth.revoke_token('j1')")
    admin.execute("select auth.revoke_token('j2')")
    admin.execute("select auth.revoke_token('j3', now() + interval '1 minute')")
    # expires_at = revocation time + max_token_lifetime (for tokens: the given expires_at).
    rows = su.execute("""
        select k, extract(epoch from expires_at - revoked_at)::int from (
            select session_id::text k, expires_at, revoked_at from auth.revoked_sessions
            union all select user_id, expires_at, revoked_at from auth.revoked_users
            union all select jti, expires_at, revoked_at from auth.revoked_tokens) x
        where k in (%s, %s, %s, %s, 'j1', 'j2')""", [s1, s2, u1, u2]).fetchall()
    assert len(rows) == 6 and all(abs(d - 7200) <= 2 for _, d in rows), rows
    assert su.execute("select extract(epoch from expires_at - now())::int / 10 from auth.revoked_tokens "
                      "where jti = 'j3'").fetchone()[0] == 6

    # A row is kept for twice the largest leeway (2 h) after expires_at: a token is accepted
    # until exp + leeway, and its iat may lie up to leeway ahead.
    su.execute("update auth.revoked_sessions set expires_at = now() - interval '119 minutes' where session_id = %s", [s1])
    assert admin.execute("select auth.purge_revocations()").fetchone()[0] == 0
    # Time passes for s1, u1, j1 (and j3 ran out too), not for s2, u2, j2.
    su.execute("update auth.revoked_sessions set expires_at = now() - interval '121 minutes' where session_id = %s", [s1])
    su.execute("update auth.revoked_users set expires_at = now() - interval '3 hours' where user_id = %s", [u1])
    su.execute("update auth.revoked_tokens set expires_at = now() - interval '1 day' where jti in ('j1', 'j3')")
    assert admin.execute("select auth.purge_revocations()").fetchone()[0] == 4
    assert admin.execute("select auth.purge_revocations()").fetchone()[0] == 0
    left = su.execute("""
        select session_id::text from auth.revoked_sessions union all
        select user_id from auth.revoked_users union all
        select jti from auth.revoked_tokens""").fetchall()
    assert sorted(r[0] for r in left) == sorted([kept_session, s2, "kept-user", u2, "kept-jti", "j2"])
    # A purged revocation no longer applies; the kept ones still do.
    assert verdict(user, env.token(_uid(), session_id=s2)) == REVOKED_VERDICT
    # (Issued before the cut-off: one minted now could, on a slow run, carry an iat a second
    # past it, and a user's revocation covers only tokens issued up to it.)
    assert verdict(user, env.token(u2, iat=t, exp=t + 3600)) == REVOKED_VERDICT
    assert verdict(user, env.token(_uid(), session_id=s1)) == OK


def test_purge_of_many_rows_does_not_block_verification(env):
    su = env.superuser()
    su.execute("""
        insert into auth.revoked_sessions (session_id, reason, expires_at)
        select gen_random_uuid(), 'bulk', now() - interval '1 day' from generate_series(1, 200000)""")
    still_revoked = _uid()
    env.pg.sql("select auth.revoke_session(%s)", [still_revoked], user=KEY_ADMIN)  # expires_at NULL
    revoked_token = env.token(_uid(), session_id=still_revoked)
    # Distinct sessions: every verification is a real lookup in the 200,000-row table.
    tokens = [env.token(_uid(), session_id=_uid()) for _ in range(20000)]

    stop = threading.Event()
    stamps: list[float] = []
    failures: list[str] = []

    def verifier():
        conn = psycopg.connect(host="127.0.0.1", port=env.pg.port, user=AUTHENTICATOR,
                               dbname="postgres", autocommit=True, options=SAFETY_OPTIONS)
        try:
            i = 0
            while not stop.is_set():
                v = verdict(conn, tokens[i % len(tokens)])
                if v != OK:
                    failures.append(v)
                if i % 50 == 0 and verdict(conn, revoked_token) != REVOKED_VERDICT:
                    failures.append("revoked token accepted")
                stamps.append(time.monotonic())
                i += 1
        except Exception as error:  # noqa: BLE001
            failures.append(repr(error))
        finally:
            conn.close()

    thread = threading.Thread(target=verifier, daemon=True)
    thread.start()
    time.sleep(1.0)
    admin = env.admin()
    start = time.monotonic()
    purged = admin.execute("select auth.purge_revocations()").fetchone()[0]
    end = time.monotonic()
    time.sleep(0.5)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert not failures, failures[:5]
    assert purged == 200000

    before = [s for s in stamps if s < start]
    during = [s for s in stamps if start <= s <= end]
    window = [start] + during + [end]
    max_gap = max(b - a for a, b in zip(window, window[1:]))
    rate_before = len(before) / (before[-1] - before[0]) if len(before) > 1 else 0.0
    rate_during = len(during) / (end - start)
    print(f"\npurge of 200,000 rows took {end - start:.3f} s; verifications/s before: "
          f"{rate_before:.0f}, during: {rate_during:.0f} ({len(during)} verifications); "
          f"longest pause during the purge: {max_gap * 1000:.1f} ms")
    assert len(during) > 0, "no verification completed while the purge ran"
    assert max_gap < 3.0
    assert count_rows(env, "auth.revoked_sessions") == 1
    assert verdict(env.user(), revoked_token) == REVOKED_VERDICT


# -- 5. request mode ---------------------------------------------------------------------------


def test_request_mode_revoked_claims(env):
    env.pg.sql(f"alter role {AUTHENTICATOR} set pg_session_auth.claims_source = 'request'")
    u, s = _uid(), _uid()
    base = {"sub": u, "role": "authenticated", "email": "a@example.com", "iat": now(),
            "exp": now() + 3600}
    cases = {
        "session": dict(base, session_id=s),
        "user": dict(base, sub=_uid(), session_id=_uid()),
        "jti": dict(base, sub=_uid(), jti="req-jti"),
    }
    good = dict(base, sub=_uid(), session_id=_uid(), jti="fine-jti")
    admin = env.admin()
    conn = env.user()

    def request(claims, statement):
        conn.execute("begin")
        conn.execute("select set_config('request.jwt.claims', %s, true)", [json.dumps(claims)])
        try:
            return conn.execute(statement).fetchone()
        finally:
            conn.execute("rollback")

    for claims in cases.values():                     # nothing revoked yet
        assert request(claims, "select auth.user_id()")[0] == claims["sub"]
        assert request(claims, "select auth.check_request()") == ("",)

    admin.execute("select auth.revoke_session(%s)", [s])
    admin.execute("select auth.revoke_user(%s::uuid)", [cases["user"]["sub"]])
    admin.execute("select auth.revoke_token('req-jti')")

    for name, claims in cases.items():
        for fn in ("auth.uid()", "auth.user_id()", "auth.jwt()", "auth.role()", "auth.email()",
                   "auth.session_id()"):
            with raises_sqlstate("28000", REVOKED):
                request(claims, f"select {fn}")
        with raises_sqlstate("PT401", REVOKED) as caught:
            request(claims, "select auth.check_request()")
        assert caught.hint == "Sign in again to get a new token."
    assert request(good, "select auth.uid()::text, auth.session_id() is not null") == (good["sub"], True)
    assert request(good, "select auth.check_request()") == ("",)


# -- 6. pg_dump --------------------------------------------------------------------------------


def test_pg_dump_keeps_revocations_and_keys(env, tmp_path):
    u, s, j = _uid(), _uid(), "dumped-jti"
    revoked = [env.token(u, session_id=_uid()), env.token(_uid(), session_id=s),
               env.token(_uid(), jti=j)]
    sa = _uid()
    others = env.token("other-user", session_id=sa)
    env.sign_out(others, "others")
    revoked.append(env.token("other-user", session_id=_uid()))
    spared = env.token("other-user", session_id=sa)
    fine = env.token(_uid(), session_id=_uid())
    admin = env.admin()
    admin.execute("select auth.revoke_user(%s::uuid, 'dump me')", [u])
    admin.execute("select auth.revoke_session(%s)", [s])
    admin.execute("select auth.revoke_token(%s)", [j])
    before = {t: env.pg.sql(f"select to_jsonb(x) from {t} x order by 1") for t in TABLES + ("auth.keys",)}

    dump = tmp_path / "dump.sql"
    conn_args = ["-h", "127.0.0.1", "-p", str(env.pg.port), "-U", "postgres"]
    subprocess.run([f"{PG_BIN}/pg_dump", *conn_args, "-d", "postgres", "-f", str(dump)],
                   check=True, capture_output=True, timeout=60)
    env.pg.sql(f"create database {RESTORED_DB}")
    result = subprocess.run([f"{PG_BIN}/psql", *conn_args, "-d", RESTORED_DB, "-X", "-q",
                             "-v", "ON_ERROR_STOP=1", "-f", str(dump)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    try:
        with psycopg.connect(host="127.0.0.1", port=env.pg.port, user="postgres",
                             dbname=RESTORED_DB, autocommit=True) as su:
            for table, rows in before.items():
                assert su.execute(f"select to_jsonb(x) from {table} x order by 1").fetchall() == rows, table
        with psycopg.connect(host="127.0.0.1", port=env.pg.port, user=AUTHENTICATOR,
                             dbname=RESTORED_DB, autocommit=True) as conn:
            assert verdicts(conn, revoked) == [REVOKED_VERDICT] * len(revoked)
            assert verdicts(conn, [spared, fine]) == [OK, OK]
            conn.execute("begin")
            with raises_sqlstate("28000", REVOKED):
                conn.execute("select auth.authenticate(%s)", [revoked[0]])
    finally:
        env.pg.sql(f"drop database if exists {RESTORED_DB} with (force)")


# -- 7. bounded memory -------------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def test_many_distinct_tokens_in_one_backend(env):
    admin = env.admin()
    revoked_sessions = [_uid() for _ in range(5)]
    for s in revoked_sessions:
        admin.execute("select auth.revoke_session(%s)", [s])
    admin.execute("select auth.revoke_user('some-revoked-user')")
    admin.execute("select auth.revoke_token('some-revoked-jti')")
    revoked = env.token(_uid(), session_id=revoked_sessions[0])

    conn = env.user()
    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    first = env.token(_uid(), session_id=_uid(), jti=_uid())
    assert verdicts(conn, [first, revoked]) == [OK, REVOKED_VERDICT]
    rss = [_rss_kb(pid)]
    query = ("select count(*) from unnest(%s::text[]) as t(token) "
             "where auth.verify(token) ->> 'sub' is not null")
    started = time.monotonic()
    for _ in range(2):
        # Distinct sessions, subjects and jtis: every kind of answer overflows its 10,000 cap.
        batch = [env.token(_uid(), session_id=_uid(), jti=_uid()) for _ in range(30000)]
        assert conn.execute(query, [batch]).fetchone()[0] == 30000
        rss.append(_rss_kb(pid))
        # Still exact after the evictions.
        assert verdicts(conn, [first, revoked, batch[0], batch[-1]]) == [
            OK, REVOKED_VERDICT, OK, OK]
    print(f"\n2 x 30,000 distinct tokens verified in {time.monotonic() - started:.1f} s; backend "
          f"VmRSS before: {rss[0]} kB, after 30,000: {rss[1]} kB, after 60,000: {rss[2]} kB")


# -- bugs ------------------------------------------------------------------------------------


def test_purge_does_not_bring_back_a_token_still_accepted_within_leeway(env):
    """A token whose exp has just passed is still accepted for pg_session_auth.leeway seconds
    (default 30). sign_out('local') by jti records expires_at = exp, and purge deletes rows
    whose expires_at < now() - so a purge in that window brings the signed-out token back."""
    t = now()
    token = env.token(_uid(), jti="leeway-jti", iat=t - 100, exp=t - 5)
    user = env.user()
    assert verdict(user, token) == OK                 # within the leeway
    env.sign_out(token, "local")
    assert verdict(user, token) == REVOKED_VERDICT
    env.pg.sql("select auth.purge_revocations()", user=KEY_ADMIN)
    assert verdict(user, token) == REVOKED_VERDICT, (
        "a signed-out token is accepted again after auth.purge_revocations()")


def test_null_ids_are_no_internal_error(env):
    """A NULL id must give NULL (STRICT) or a clean data error (class 22), never XX000
    'argument 0 must not be null'. revoke_session / revoke_user / revoke_token have a
    defaulted Option argument, so pgrx does not declare them STRICT, and their non-Option
    first argument fails on NULL as an internal error."""
    admin = env.admin()
    wrong = {}
    for call in ("auth.revoke_session(null)", "auth.revoke_user(null::text)",
                 "auth.revoke_user(null::uuid)", "auth.revoke_token(null)"):
        try:
            result = admin.execute(f"select {call}").fetchone()[0]
        except psycopg.Error as error:
            if not error.sqlstate.startswith("22"):
                wrong[call] = f"{error.sqlstate} {error.diag.message_primary}"
        else:
            if result not in (None, ""):
                wrong[call] = repr(result)
    assert not wrong, wrong


def test_sign_out_rolled_back_to_a_savepoint_does_not_silence_later_revocations(env):
    """Claim functions return NULL instead of raising only in the transaction that itself
    wrote the revocation. A sign-out undone by ROLLBACK TO SAVEPOINT wrote nothing, so a
    revocation committed afterwards by another transaction must raise 28000 as usual. The
    per-transaction flag (src/revocation.rs, note_revocation_written) is cleared only at
    top-level COMMIT/ABORT, so here auth.uid() returns NULL instead."""
    u, s = _uid(), _uid()
    t = env.token(u, session_id=s)
    a, b = env.user(), env.admin()
    a.execute("begin")
    a.execute("select auth.authenticate(%s)", [t])
    a.execute("savepoint before_sign_out")
    a.execute("select auth.sign_out('local')")
    assert a.execute("select auth.uid()").fetchone()[0] is None
    a.execute("rollback to savepoint before_sign_out")
    assert a.execute("select auth.uid()::text").fetchone()[0] == u   # signed in again
    b.execute("select auth.revoke_session(%s)", [s])                 # another transaction
    with raises_sqlstate("28000", REVOKED):
        a.execute("select auth.uid()")
    a.execute("rollback")
