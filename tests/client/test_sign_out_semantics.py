"""What auth.sign_out() and its neighbours mean, against the real server, as non-superusers
(``app_user`` with tokens that carry no role claim, so no role switch; ``key_admin`` as the
admin):

* V7: sign_out('global') / ('local') always ends the caller's own token or session, and
  'others' every other session of the caller, even when the caller's `iat` lies ahead of the
  database clock (within the leeway): the per-user cut-off was "now", so a token issued "in
  the future" outlived its own global sign-out.
* Subjects in canonical form: a UUID `sub` written in upper case signs out the same user as
  its lower-case spelling.
* auth.is_revoked as an oracle: a non-admin may ask only about claims of its own bound
  subject (42501 otherwise); admins may ask about any claims.
* request.jwt.claims cannot be rewritten by the client while a verified identity is bound in
  verified mode (42501), but may be written before authenticate, after the transaction, after
  a ROLLBACK TO SAVEPOINT that undid authenticate, and always in request mode.

Every test runs twice: with the revocation filter (shared_preload_libraries) and without
(session_preload_libraries).
"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from client_support import make_key, now
from conftest import APP_USER, KEY_ADMIN, raises_sqlstate, running_cluster

KID = "so-k"
REVOKED = "invalid token: revoked"


@pytest.fixture(scope="module", params=["shared", "session"],
                ids=["with-filter", "without-filter"])
def cluster(request):
    with running_cluster(preload=request.param) as c:
        yield c


def _uid() -> str:
    return str(uuid.uuid4())


class Env:
    def __init__(self, pg):
        self.pg = pg
        self.key = make_key("HS256", KID)
        pg.sql("select auth.add_key(%s, 'HS256', %s)", [KID, self.key.secret_text],
               user=KEY_ADMIN)

    def token(self, sub: str, iat_ahead: float = 0, ttl: int = 600, **claims) -> str:
        """A token of `sub` issued `iat_ahead` seconds from now (negative: in the past)."""
        t = now()
        payload = {"sub": sub, "iat": t + iat_ahead, "exp": t + ttl}
        payload.update(claims)
        return self.key.sign(payload)

    def app(self, autocommit: bool = True) -> psycopg.Connection:
        return self.pg.connect(APP_USER, autocommit=autocommit)

    def admin(self) -> psycopg.Connection:
        return self.pg.connect(KEY_ADMIN)

    def set_database(self, name: str, value: str) -> None:
        """A per-database setting (reset by the `pg` fixture), seen by new connections."""
        self.pg.sql(f"alter database postgres set {name} = '{value}'")

    def sign_out(self, conn, token: str, scope: str) -> None:
        """begin; authenticate(token); sign_out(scope); commit; on `conn`."""
        conn.execute("begin")
        conn.execute("select auth.authenticate(%s)", [token])
        conn.execute("select auth.sign_out(%s)", [scope])
        conn.execute("commit")


@pytest.fixture
def env(pg):
    return Env(pg)


def assert_refused(conn, token: str) -> None:
    """auth.verify and auth.authenticate both refuse the token as revoked (28000)."""
    with raises_sqlstate("28000", REVOKED):
        conn.execute("select auth.verify(%s)", [token])
    conn.execute("begin")
    with raises_sqlstate("28000", REVOKED):
        conn.execute("select auth.authenticate(%s)", [token])
    conn.execute("rollback")


def assert_accepted(conn, token: str) -> None:
    sub = conn.execute("select auth.verify(%s)->>'sub'", [token]).fetchone()[0]
    assert sub is not None
    conn.execute("begin")
    assert conn.execute("select auth.authenticate(%s)->>'sub'", [token]).fetchone()[0] == sub
    conn.execute("rollback")


# == V7: the caller's own token, issued ahead of the database clock ===========================

SCOPES = {
    "global": ("global", {"session_id": "S"}),
    "local with a session_id": ("local", {"session_id": "S"}),
    "local with only a jti": ("local", {"jti": "J"}),
}


@pytest.mark.parametrize("case", SCOPES.keys())
def test_sign_out_ends_the_callers_token_even_if_issued_ahead_of_the_clock(env, case):
    """V7: with leeway 60 s a token whose iat is now+30 is valid. Signing out with it
    ('global'; 'local' by session_id; 'local' by jti) must end it: the baseline's global
    cut-off was the database's "now", before the token's own iat, so the token survived its
    own global sign-out. After `begin; authenticate(T); sign_out(scope); commit;` T is
    refused (28000 revoked) on the same and on a new connection."""
    env.set_database("pg_session_auth.leeway", "60")
    scope, extra = SCOPES[case]
    extra = {k: (_uid() if v == "S" else f"jti-{_uid()}") for k, v in extra.items()}
    token = env.token(_uid(), iat_ahead=30, ttl=600, **extra)
    conn = env.app()
    assert_accepted(conn, token)
    env.sign_out(conn, token, scope)
    assert_refused(conn, token)
    assert_refused(env.app(), token)


def test_sign_out_others_with_a_token_issued_ahead_spares_only_the_callers_session(env):
    """V7 for 'others': T1 (session S1, iat now+30) signs out the caller's other sessions.
    T2 (same sub, session S2, iat now+25 - issued before T1) must be refused; the baseline
    cut at the database's "now" and spared T2. T1 itself stays accepted."""
    env.set_database("pg_session_auth.leeway", "60")
    u = _uid()
    t1 = env.token(u, iat_ahead=30, session_id=_uid())
    t2 = env.token(u, iat_ahead=25, session_id=_uid())
    conn = env.app()
    assert_accepted(conn, t1)
    assert_accepted(conn, t2)
    env.sign_out(conn, t1, "others")
    for c in (conn, env.app()):
        assert_refused(c, t2)
        assert_accepted(c, t1)


# == subjects in canonical form ===============================================================


def test_global_sign_out_with_an_upper_case_uuid_sub_covers_every_spelling(env):
    """A UUID sub is one subject however it is written. A token whose sub is the UPPER-case
    spelling signs out globally: it and a lower-case-sub token of the same user issued
    before are both refused (the baseline stored the cut-off under the upper-case text,
    which no lookup - made in canonical lower case - ever found)."""
    u = _uid()
    upper = env.token(u.upper(), iat_ahead=0, session_id=_uid())
    lower = env.token(u, iat_ahead=-10, session_id=_uid())
    other = env.token(_uid(), iat_ahead=-10, session_id=_uid())
    conn = env.app()
    for t in (upper, lower, other):
        assert_accepted(conn, t)
    env.sign_out(conn, upper, "global")
    for c in (conn, env.app()):
        assert_refused(c, upper)
        assert_refused(c, lower)
        assert_accepted(c, other)


def test_sign_out_others_with_an_upper_case_uuid_sub_spares_only_the_callers_session(env):
    """'others' from a token with an upper-case UUID sub: the same user's other session
    (lower-case sub, issued before) is refused; the caller's session - under either
    spelling - stays accepted."""
    u = _uid()
    s1, s2 = _uid(), _uid()
    caller = env.token(u.upper(), session_id=s1)
    same_session_lower = env.token(u, iat_ahead=-10, session_id=s1)
    other_session_lower = env.token(u, iat_ahead=-10, session_id=s2)
    conn = env.app()
    for t in (caller, same_session_lower, other_session_lower):
        assert_accepted(conn, t)
    env.sign_out(conn, caller, "others")
    for c in (conn, env.app()):
        assert_refused(c, other_session_lower)
        assert_accepted(c, caller)
        assert_accepted(c, same_session_lower)


# == auth.is_revoked as an oracle =============================================================

IS_REVOKED = "select auth.is_revoked(%s::jsonb)"


def test_is_revoked_refused_to_a_non_admin_without_an_identity(env):
    """auth.is_revoked was open to every role: anyone could probe whether any user, session
    or token had been revoked. A non-admin without a bound identity may ask about nothing:
    42501, for claims with a sub, without one, and for its own-looking ones alike."""
    conn = env.app()
    for claims in ({"sub": _uid()}, {"sub": _uid(), "session_id": _uid(), "iat": now()},
                   {"session_id": _uid()}, {"jti": "some-jti"}, {"sub": "github|42"}, {}):
        with raises_sqlstate("42501"):
            conn.execute(IS_REVOKED, [json.dumps(claims)])


def test_is_revoked_lets_a_non_admin_ask_only_about_its_own_keys(env):
    """A non-admin with a bound identity may ask about claims whose every revocation key is
    its own - sub (compared canonically: a UUID in another case or with braces is the same
    subject), and session, jti and iss when given - and gets the right answers. Anything
    else is an oracle for someone else's sign-out and raises 42501: another sub, no sub,
    its own sub with another session or jti (anyone's session could be probed), or with
    another issuer (the same sub there is another user)."""
    me, them = _uid(), _uid()
    my_session, my_jti = _uid(), f"jti-{_uid()}"
    revoked_session, revoked_jti = _uid(), f"jti-{_uid()}"
    admin = env.admin()
    admin.execute("select auth.revoke_session(%s)", [revoked_session])
    admin.execute("select auth.revoke_token(%s)", [revoked_jti])

    conn = env.app()
    conn.execute("begin")
    conn.execute("select auth.authenticate(%s)",
                 [env.token(me, session_id=my_session, jti=my_jti)])

    def ask(claims) -> bool:
        return conn.execute(IS_REVOKED, [json.dumps(claims)]).fetchone()[0]

    t = now()
    for sub in (me, me.upper(), "{" + me + "}"):
        assert ask({"sub": sub, "session_id": my_session, "iat": t}) is False, sub
        assert ask({"sub": sub, "jti": my_jti, "iat": t}) is False, sub
        assert ask({"sub": sub, "iat": t}) is False, sub
    admin.execute("select auth.revoke_session(%s)", [my_session])
    assert ask({"sub": me, "session_id": my_session, "iat": t}) is True
    refused = [{"sub": them, "session_id": revoked_session},
               {"sub": them},
               {"sub": me, "session_id": revoked_session},
               {"sub": me, "jti": revoked_jti},
               {"sub": me, "iss": "https://elsewhere.example"},
               {"session_id": revoked_session},
               {"jti": revoked_jti},
               {}]
    for claims in refused:
        conn.execute("savepoint q")
        with raises_sqlstate("42501"):
            ask(claims)
        conn.execute("rollback to savepoint q")
    conn.execute("rollback")

    # A non-UUID subject is compared exactly.
    conn.execute("begin")
    github_session = _uid()
    conn.execute("select auth.authenticate(%s)",
                 [env.token("github|42", session_id=github_session)])
    assert ask({"sub": "github|42", "session_id": github_session}) is False
    conn.execute("savepoint q")
    with raises_sqlstate("42501"):
        ask({"sub": "GITHUB|42", "session_id": github_session})
    conn.execute("rollback to savepoint q")
    conn.execute("rollback")


def test_is_revoked_answers_an_admin_about_any_claims(env):
    """key_admin (session_auth_admin) may ask about any claims, with no identity bound, and
    gets correct answers (sessions, jtis, user cut-offs judged by iat)."""
    admin = env.admin()
    u, s = _uid(), _uid()
    j = f"jti-{_uid()}"
    t = now()

    def ask(claims) -> bool:
        return admin.execute(IS_REVOKED, [json.dumps(claims)]).fetchone()[0]

    assert ask({"sub": u, "session_id": s, "iat": t}) is False
    admin.execute("select auth.revoke_session(%s)", [s])
    admin.execute("select auth.revoke_token(%s)", [j])
    assert ask({"sub": u, "session_id": s, "iat": t}) is True
    assert ask({"session_id": s}) is True
    assert ask({"jti": j}) is True
    assert ask({"sub": u, "session_id": _uid(), "iat": t}) is False
    admin.execute("select auth.revoke_user(%s::uuid)", [u])
    assert ask({"sub": u.upper(), "iat": t - 10}) is True
    assert ask({"sub": u, "iat": t + 3600}) is False
    assert ask({"sub": _uid(), "iat": t - 10}) is False


# == request.jwt.claims forgery in verified mode ==============================================

FORGE_STATEMENTS = {
    "set_config local": "select set_config('request.jwt.claims', {v}, true)",
    "set local": "set local request.jwt.claims = {v}",
    "set_config session": "select set_config('request.jwt.claims', {v}, false)",
    "set session": "set request.jwt.claims = {v}",
    "reset": "reset request.jwt.claims",
}


def _forged(sub: str) -> str:
    return json.dumps({"sub": sub, "role": "authenticated", "exp": now() + 3600})


def _statement(kind: str, forged: str) -> str:
    literal = "'" + forged.replace("'", "''") + "'"
    return FORGE_STATEMENTS[kind].format(v=literal)


def _request_claims(conn):
    text = conn.execute("select current_setting('request.jwt.claims', true)").fetchone()[0]
    return json.loads(text) if text else None


def _assert_refused_write(conn, kind: str, forged: str, bound=None) -> None:
    conn.execute("savepoint forge")
    if kind == "reset":
        # PostgreSQL resets a setting without asking the extension; what SQL reads must
        # still be the bound claims, and the session's reset value (which a client can
        # choose at connection start) must never show through.
        conn.execute(_statement(kind, forged))
        if bound is not None:
            assert _request_claims(conn) == bound
    else:
        with raises_sqlstate("42501"):
            conn.execute(_statement(kind, forged))
    conn.execute("rollback to savepoint forge")


def test_request_jwt_claims_cannot_be_rewritten_while_an_identity_is_bound(env):
    """In verified mode, after `begin; select auth.authenticate(T_A);` the client rewrote
    request.jwt.claims (set_config local or session, SET LOCAL, SET, RESET) and SQL written
    for PostgREST/Supabase that reads that setting saw user B. Each write must raise 42501,
    and the setting still holds A's claims afterwards."""
    a, b = _uid(), _uid()
    conn = env.app()
    conn.execute("begin")
    claims_a = conn.execute("select auth.authenticate(%s)", [env.token(a)]).fetchone()[0]
    assert _request_claims(conn) == claims_a
    for kind in FORGE_STATEMENTS:
        _assert_refused_write(conn, kind, _forged(b), bound=claims_a)
        assert _request_claims(conn) == claims_a, kind
        assert conn.execute("select auth.user_id()").fetchone()[0] == a
    conn.execute("commit")


def test_request_jwt_claims_from_the_connection_start_never_show_while_an_identity_is_bound(env):
    """A client may choose request.jwt.claims at connection start (a startup option, or
    ALTER ROLE ... SET on itself); RESET inside an authenticated transaction goes back to
    that value without asking the extension. Reads must still show the bound claims."""
    a, b = _uid(), _uid()
    forged = _forged(b)
    options = "-c request.jwt.claims=" + forged.replace("\\", "\\\\").replace(" ", "\\ ")
    conn = env.pg.connect(APP_USER, options=options)
    assert _request_claims(conn) == json.loads(forged)
    conn.execute("begin")
    claims_a = conn.execute("select auth.authenticate(%s)", [env.token(a)]).fetchone()[0]
    conn.execute("reset request.jwt.claims")
    assert _request_claims(conn) == claims_a
    assert conn.execute("select current_setting('request.jwt.claims')::jsonb ->> 'sub'").fetchone()[0] == a
    conn.execute("reset all")
    assert _request_claims(conn) == claims_a
    conn.execute("commit")
    assert _request_claims(conn) == json.loads(forged)


def test_request_jwt_claims_may_be_set_before_authenticate_which_overrides_it(env):
    """Before auth.authenticate() in a transaction the client may set request.jwt.claims (no
    error); authenticate then overrides it with the verified claims, and from then on the
    client may not write it (42501)."""
    a, b = _uid(), _uid()
    conn = env.app()
    conn.execute("begin")
    conn.execute(_statement("set_config local", _forged(b)))
    assert _request_claims(conn)["sub"] == b
    claims_a = conn.execute("select auth.authenticate(%s)", [env.token(a)]).fetchone()[0]
    assert _request_claims(conn) == claims_a
    _assert_refused_write(conn, "set_config local", _forged(b))
    assert _request_claims(conn) == claims_a
    conn.execute("commit")


def test_request_jwt_claims_may_be_set_again_after_commit(env):
    """The lock on request.jwt.claims lasts as long as the binding: refused inside the
    authenticated transaction, allowed in the next transaction and in autocommit."""
    a, b = _uid(), _uid()
    conn = env.app()
    conn.execute("begin")
    conn.execute("select auth.authenticate(%s)", [env.token(a)])
    _assert_refused_write(conn, "set_config local", _forged(b))
    conn.execute("commit")
    conn.execute("begin")
    for kind in ("set_config local", "set local"):
        conn.execute(_statement(kind, _forged(b)))
        assert _request_claims(conn)["sub"] == b
    conn.execute("commit")
    for kind in ("set_config session", "set session", "reset"):
        conn.execute(_statement(kind, _forged(b)))
    assert conn.execute("select auth.user_id()").fetchone()[0] is None


def test_request_jwt_claims_may_be_set_after_rollback_to_a_savepoint_undoing_authenticate(env):
    """ROLLBACK TO SAVEPOINT that undoes auth.authenticate() undoes the lock too: writes are
    refused while the identity is bound and allowed again once it is gone."""
    a, b = _uid(), _uid()
    conn = env.app()
    conn.execute("begin")
    conn.execute("savepoint before_auth")
    conn.execute("select auth.authenticate(%s)", [env.token(a)])
    _assert_refused_write(conn, "set_config local", _forged(b))
    _assert_refused_write(conn, "set local", _forged(b))
    conn.execute("rollback to savepoint before_auth")
    assert conn.execute("select auth.user_id()").fetchone()[0] is None
    conn.execute(_statement("set_config local", _forged(b)))
    assert _request_claims(conn)["sub"] == b
    conn.execute(_statement("set local", _forged(b)))
    assert conn.execute("select auth.user_id()").fetchone()[0] is None   # verified mode
    conn.execute("commit")


def test_request_mode_never_refuses_writes_to_request_jwt_claims(env):
    """In request mode (pg_session_auth.claims_source = 'request') PostgREST sets
    request.jwt.claims itself, so writes are never refused - not even after
    auth.authenticate() in the same transaction (the claim functions then read what was
    written, as documented for that mode)."""
    env.set_database("pg_session_auth.claims_source", "request")
    a, b = _uid(), _uid()
    conn = env.app()
    assert conn.execute("show pg_session_auth.claims_source").fetchone()[0] == "request"
    conn.execute("begin")
    conn.execute("select auth.authenticate(%s)", [env.token(a)])
    for kind in FORGE_STATEMENTS:
        conn.execute(_statement(kind, _forged(b)))
    conn.execute(_statement("set_config local", _forged(b)))
    assert _request_claims(conn)["sub"] == b
    assert conn.execute("select auth.user_id()").fetchone()[0] == b
    conn.execute("commit")
