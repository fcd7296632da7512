"""Keys bound to an issuer, and revocation within an issuer (new API).

One database may trust several identity providers. ``auth.add_key(kid, alg, key, issuer)`` and
``auth.import_jwks(jwks, issuer)`` bind keys to an issuer: a token verified with such a key
must carry exactly that ``iss`` (otherwise ``28000`` ``invalid token: wrong issuer``, also when
``iss`` is missing). A key added without an issuer accepts any ``iss`` (the
``pg_session_auth.issuer`` setting still applies), and re-adding a kid without an issuer
removes its binding.

The same ``sub`` at two issuers is two users as far as revocation goes: ``sign_out('global')``
and ``sign_out('others')`` revoke only tokens of the signing-out token's issuer;
``auth.revoke_user(user)`` (no issuer) revokes the subject at every issuer, and
``auth.revoke_user(user, issuer => …)`` / ``auth.revoke_user(uuid, reason, issuer)`` only at
that issuer; ``auth.is_revoked(claims)`` honours ``iss``. ``auth.uid()`` is the ``sub`` whatever
the issuer, so policies that must tell the issuers apart check ``auth.jwt()->>'iss'`` as well.

Every test runs twice: with the shared revocation filter (``shared_preload_libraries``) and
without it (``session_preload_libraries``). Tokens are checked as ``app_user`` (without a role
claim, so it keeps its role), keys and revocations are managed as ``key_admin``.

On the 0.2.0 build these functions have no ``issuer`` argument, so every test fails with
``42883`` (undefined function) where it first uses one.
"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from client_support import invalid, make_key, now
from conftest import APP_USER, KEY_ADMIN, raises_sqlstate, running_cluster

ISS_A = "https://a.example"
ISS_B = "https://b.example"
ISS_C = "https://c.example"
KID_A = "issuer-a"
KID_B = "issuer-b"
KID_ANY = "issuer-any"
TABLES = ("auth.revoked_sessions", "auth.revoked_users", "auth.revoked_tokens")
OK = "ok"
REVOKED = "28000 " + invalid("revoked")
WRONG_ISSUER_MESSAGE = invalid("wrong issuer")
WRONG_ISSUER = "28000 " + WRONG_ISSUER_MESSAGE
ABSENT = object()  # leaves a claim out of a token


@pytest.fixture(scope="module", params=["shared", "session"],
                ids=["with-filter", "without-filter"])
def cluster(request):
    with running_cluster(preload=request.param) as c:
        yield c


def _uid() -> str:
    return str(uuid.uuid4())


class Env:
    """Keys KA (bound to ISS_A) and KB (bound to ISS_B), both HS256; tokens; connections."""

    def __init__(self, pg):
        self.pg = pg
        self.ka = make_key("HS256", KID_A)
        self.kb = make_key("HS256", KID_B)
        self.issuer_of = {KID_A: ISS_A, KID_B: ISS_B}

    def bind_keys(self) -> None:
        with self.admin() as admin:
            for key in (self.ka, self.kb):
                admin.execute("select auth.add_key(%s, 'HS256', %s, issuer => %s)",
                              [key.kid, key.secret_text, self.issuer_of[key.kid]])

    def token(self, key, sub: str | None = None, iss=None, **kw) -> str:
        """A token signed with `key`, carrying its key's issuer unless `iss` says otherwise
        (ABSENT: no iss claim), its own session, issued 5 s ago, valid for an hour."""
        t = now()
        payload = {"sub": sub or _uid(), "session_id": _uid(), "iat": t - 5, "exp": t + 3600}
        if iss is None:
            iss = self.issuer_of[key.kid]
        if iss is not ABSENT:
            payload["iss"] = iss
        payload.update(kw)
        return key.sign(payload)

    def user(self) -> psycopg.Connection:
        return self.pg.connect(APP_USER)

    def admin(self) -> psycopg.Connection:
        return self.pg.connect(KEY_ADMIN)

    def sign_out(self, token: str, scope: str) -> None:
        conn = self.user()
        conn.execute("begin")
        conn.execute("select auth.authenticate(%s)", [token])
        conn.execute("select auth.sign_out(%s)", [scope])
        conn.execute("commit")
        conn.close()

    def is_revoked(self, claims: dict) -> bool:
        with self.admin() as admin:
            return admin.execute("select auth.is_revoked(%s::jsonb)",
                                 [json.dumps(claims)]).fetchone()[0]


@pytest.fixture
def env(pg):
    pg.sql("truncate " + ", ".join(TABLES))
    pg.sql("drop table if exists public.issuer_notes")
    # The keys are bound by each test itself (env.bind_keys()), so that on a build without the
    # issuer argument the tests FAIL with 42883 instead of erroring in this fixture.
    return Env(pg)


def verdict(conn, token: str) -> str:
    """'ok' or 'SQLSTATE message'; never raises."""
    return conn.execute("select public.try_verify(%s)", [token]).fetchone()[0]


def verdicts(conn, tokens) -> list[str]:
    return [verdict(conn, t) for t in tokens]


def assert_wrong_issuer(conn, token: str) -> None:
    """verify and authenticate both refuse the token: 28000, 'invalid token: wrong issuer'."""
    with raises_sqlstate("28000", WRONG_ISSUER_MESSAGE):
        conn.execute("select auth.verify(%s)", [token])
    conn.execute("begin")
    with raises_sqlstate("28000", WRONG_ISSUER_MESSAGE):
        conn.execute("select auth.authenticate(%s)", [token])
    conn.execute("rollback")


# -- keys bound to an issuer ----------------------------------------------------------------


def test_a_bound_key_accepts_only_its_issuer(env):
    """A token verified with a key bound to an issuer must carry exactly that iss: another
    issuer, a near miss, or no iss at all is 'wrong issuer' (28000) — so a provider cannot
    mint tokens that claim to come from another one."""
    env.bind_keys()
    conn = env.user()
    good = env.token(env.ka)
    assert verdict(conn, good) == OK
    conn.execute("begin")
    claims = conn.execute("select auth.authenticate(%s)", [good]).fetchone()[0]
    assert claims["iss"] == ISS_A
    conn.execute("rollback")
    for iss in (ISS_B, ISS_A + "/", "https://A.example", "", ABSENT):
        token = env.token(env.ka, iss=iss)
        assert verdict(conn, token) == WRONG_ISSUER, iss
        assert_wrong_issuer(conn, token)
    # The same for the other key and its issuer.
    assert verdict(conn, env.token(env.kb)) == OK
    assert verdict(conn, env.token(env.kb, iss=ISS_A)) == WRONG_ISSUER
    assert verdict(conn, env.token(env.kb, iss=ABSENT)) == WRONG_ISSUER


def test_a_key_without_issuer_accepts_any_iss(env):
    """A key added without an issuer is not bound, even while other keys are: it accepts any
    iss (or none). pg_session_auth.issuer still applies to it as before."""
    env.bind_keys()
    ku = make_key("HS256", KID_ANY)
    with env.admin() as admin:
        admin.execute("select auth.add_key(%s, 'HS256', %s)", [KID_ANY, ku.secret_text])
    env.issuer_of[KID_ANY] = ISS_C
    conn = env.user()
    for iss in (ISS_A, ISS_B, ISS_C, ABSENT):
        assert verdict(conn, env.token(ku, iss=iss)) == OK, iss
    assert verdict(conn, env.token(env.ka, iss=ISS_B)) == WRONG_ISSUER  # still bound

    env.pg.sql(f"alter role {APP_USER} set pg_session_auth.issuer = '{ISS_C}'")
    conn = env.user()
    assert conn.execute("show pg_session_auth.issuer").fetchone()[0] == ISS_C
    assert verdict(conn, env.token(ku, iss=ISS_C)) == OK
    assert verdict(conn, env.token(ku, iss=ISS_A)) == WRONG_ISSUER
    assert verdict(conn, env.token(ku, iss=ABSENT)) == "28000 " + invalid("missing claim")


def test_re_adding_a_kid_without_issuer_removes_the_binding(env):
    """add_key for an existing kid replaces its binding too: without an issuer the key accepts
    any iss again; with another issuer it is bound to that one. Sessions that verified before
    see the change from their next statement (the keyring cache is not stale)."""
    env.bind_keys()
    conn = env.user()
    other_iss = env.token(env.ka, iss=ISS_B)
    no_iss = env.token(env.ka, iss=ABSENT)
    assert verdicts(conn, [env.token(env.ka), other_iss, no_iss]) == [OK, WRONG_ISSUER,
                                                                      WRONG_ISSUER]
    with env.admin() as admin:
        admin.execute("select auth.add_key(%s, 'HS256', %s)", [KID_A, env.ka.secret_text])
    assert verdicts(conn, [env.token(env.ka), other_iss, no_iss]) == [OK, OK, OK]
    assert verdicts(env.user(), [other_iss, no_iss]) == [OK, OK]

    with env.admin() as admin:  # positional form: (kid, alg, key, issuer)
        admin.execute("select auth.add_key(%s, 'HS256', %s, %s)",
                      [KID_A, env.ka.secret_text, ISS_B])
    assert verdicts(conn, [env.token(env.ka), other_iss, no_iss]) == [WRONG_ISSUER, OK,
                                                                      WRONG_ISSUER]


def test_import_jwks_binds_every_key_to_the_issuer(env):
    """import_jwks(jwks, issuer) binds each imported key to that issuer; importing the same
    document again without an issuer removes the bindings (as add_key does)."""
    env.bind_keys()
    es, ed = make_key("ES256", "jwks-es"), make_key("EdDSA", "jwks-ed")
    document = json.dumps({"keys": [dict(es.public_jwk, kid=es.kid, alg="ES256"),
                                    dict(ed.public_jwk, kid=ed.kid)]})
    with env.admin() as admin:
        assert admin.execute("select auth.import_jwks(%s::jsonb, issuer => %s)",
                             [document, ISS_A]).fetchone()[0] == 2
    env.issuer_of.update({es.kid: ISS_A, ed.kid: ISS_A})
    conn = env.user()
    for key in (es, ed):
        assert verdict(conn, env.token(key)) == OK
        assert verdict(conn, env.token(key, iss=ISS_B)) == WRONG_ISSUER
        assert verdict(conn, env.token(key, iss=ABSENT)) == WRONG_ISSUER
        assert_wrong_issuer(conn, env.token(key, iss=ISS_B))

    with env.admin() as admin:
        assert admin.execute("select auth.import_jwks(%s::jsonb)", [document]).fetchone()[0] == 2
    for key in (es, ed):
        assert verdicts(conn, [env.token(key, iss=ISS_B), env.token(key, iss=ABSENT)]) == [OK, OK]


# -- revocation within an issuer ------------------------------------------------------------


def test_sign_out_global_stays_within_the_issuer(env):
    """sign_out('global') with a token of issuer A revokes the subject's tokens of issuer A
    only: the same sub at issuer B is another user and keeps working."""
    env.bind_keys()
    u = _uid()
    ta, tb = env.token(env.ka, u), env.token(env.kb, u)
    ta_other, tb_other = env.token(env.ka, u), env.token(env.kb, u)  # other sessions, unchecked
    reader = env.user()
    assert verdicts(reader, [ta, tb]) == [OK, OK]

    env.sign_out(ta, "global")
    for conn in (reader, env.user()):
        assert verdicts(conn, [ta, tb, ta_other, tb_other]) == [REVOKED, OK, REVOKED, OK]
    iat = now() - 5
    assert env.is_revoked({"sub": u, "iss": ISS_A, "iat": iat}) is True
    assert env.is_revoked({"sub": u, "iss": ISS_B, "iat": iat}) is False


def test_sign_out_others_stays_within_the_issuer(env):
    """sign_out('others') with a token of issuer A revokes the subject's other sessions at A,
    keeps the signing-out session, and leaves every session at issuer B alone."""
    env.bind_keys()
    u = _uid()
    ta1, ta2 = env.token(env.ka, u), env.token(env.ka, u)
    tb1, tb2 = env.token(env.kb, u), env.token(env.kb, u)
    reader = env.user()
    assert verdicts(reader, [ta1, ta2, tb1, tb2]) == [OK] * 4

    env.sign_out(ta1, "others")
    for conn in (reader, env.user()):
        assert verdicts(conn, [ta1, ta2, tb1, tb2]) == [OK, REVOKED, OK, OK]
    iat = now() - 5
    assert env.is_revoked({"sub": u, "iss": ISS_A, "iat": iat, "session_id": _uid()}) is True
    assert env.is_revoked({"sub": u, "iss": ISS_B, "iat": iat, "session_id": _uid()}) is False


def test_revoke_user_without_issuer_covers_every_issuer(env):
    """auth.revoke_user(user) without an issuer (text and uuid forms) revokes the subject at
    every issuer; other subjects are untouched."""
    env.bind_keys()
    u, v, w = _uid(), _uid(), _uid()
    tokens = {s: (env.token(env.ka, s), env.token(env.kb, s)) for s in (u, v, w)}
    reader = env.user()
    assert verdicts(reader, [t for pair in tokens.values() for t in pair]) == [OK] * 6

    with env.admin() as admin:
        admin.execute("select auth.revoke_user(%s::uuid)", [u])
        admin.execute("select auth.revoke_user(%s::text, 'abuse')", [v])
    for conn in (reader, env.user()):
        assert verdicts(conn, [*tokens[u], *tokens[v], *tokens[w]]) == [REVOKED] * 4 + [OK] * 2
    iat = now() - 5
    for iss in (ISS_A, ISS_B):
        assert env.is_revoked({"sub": u, "iss": iss, "iat": iat}) is True
        assert env.is_revoked({"sub": w, "iss": iss, "iat": iat}) is False


def test_revoke_user_with_an_issuer_covers_only_that_issuer(env):
    """auth.revoke_user(user, issuer => B) revokes the subject's tokens of issuer B issued so
    far — the ones a connection already accepted (its cached answers must not carry over) and
    ones first checked afterwards — but none of issuer A; a later sign-in at B works."""
    env.bind_keys()
    u = _uid()
    ta, tb = env.token(env.ka, u), env.token(env.kb, u)
    ta_unseen, tb_unseen = env.token(env.ka, u), env.token(env.kb, u)
    reader = env.user()
    assert verdicts(reader, [ta, tb]) == [OK, OK]

    with env.admin() as admin:
        admin.execute("select auth.revoke_user(%s::text, issuer => %s)", [u, ISS_B])
    for conn in (reader, env.user()):
        assert verdicts(conn, [ta, tb, tb_unseen, ta_unseen]) == [OK, REVOKED, REVOKED, OK]
    conn = env.user()
    conn.execute("begin")
    with raises_sqlstate("28000", invalid("revoked")):
        conn.execute("select auth.authenticate(%s)", [tb])
    conn.execute("rollback")
    conn.execute("begin")
    assert conn.execute("select auth.authenticate(%s)->>'iss'", [ta]).fetchone()[0] == ISS_A
    conn.execute("rollback")

    later = env.token(env.kb, u, iat=now() + 2)  # signed in again at B after the cut-off
    assert verdict(reader, later) == OK
    iat = now() - 5
    assert env.is_revoked({"sub": u, "iss": ISS_B, "iat": iat}) is True
    assert env.is_revoked({"sub": u, "iss": ISS_A, "iat": iat}) is False

    # The uuid form, positionally (user, reason, issuer): now issuer A as well.
    with env.admin() as admin:
        admin.execute("select auth.revoke_user(%s::uuid, %s, %s)", [u, "abuse", ISS_A])
    assert verdicts(reader, [ta, ta_unseen, tb, later]) == [REVOKED, REVOKED, REVOKED, OK]
    assert env.is_revoked({"sub": u, "iss": ISS_A, "iat": iat}) is True


def test_revoke_user_uuid_reason_issuer(env):
    """auth.revoke_user(uuid, reason, issuer) revokes at that issuer only; the subject is
    matched as a UUID however it is written in the token."""
    env.bind_keys()
    u = _uid()
    ta, tb = env.token(env.ka, u), env.token(env.kb, u)
    ta_upper = env.token(env.ka, u.upper())
    reader = env.user()
    assert verdicts(reader, [ta, ta_upper, tb]) == [OK, OK, OK]
    with env.admin() as admin:
        admin.execute("select auth.revoke_user(%s::uuid, %s, %s)", [u, "stolen laptop", ISS_A])
    assert verdicts(reader, [ta, ta_upper, tb]) == [REVOKED, REVOKED, OK]
    assert verdicts(env.user(), [ta, ta_upper, tb]) == [REVOKED, REVOKED, OK]


# -- identities and RLS ---------------------------------------------------------------------


def test_uid_is_the_sub_and_a_policy_on_iss_separates_issuers(env):
    """auth.uid() is the sub whatever the issuer, so U@A and U@B have the same uid; a policy
    that also checks auth.jwt()->>'iss' keeps U@A's rows from U@B's token (as app_user, under
    RLS). The binding is what makes iss trustworthy: a token of B's key claiming iss A is
    refused and so cannot reach U@A's rows."""
    env.bind_keys()
    u, v = _uid(), _uid()
    env.pg.sql("create table public.issuer_notes (owner uuid not null, iss text not null, "
               "body text not null)")
    env.pg.sql("insert into public.issuer_notes values "
               "(%s, %s, 'u at a'), (%s, %s, 'u at b'), (%s, %s, 'v at a')",
               [u, ISS_A, u, ISS_B, v, ISS_A])
    env.pg.sql("alter table public.issuer_notes enable row level security")
    env.pg.sql("create policy own_notes on public.issuer_notes for select "
               "using (owner = auth.uid() and iss = auth.jwt()->>'iss')")
    env.pg.sql(f"grant select on public.issuer_notes to {APP_USER}")

    conn = env.user()

    def visible(token: str) -> tuple[str, list[str]]:
        conn.execute("begin")
        conn.execute("select auth.authenticate(%s)", [token])
        uid = str(conn.execute("select auth.uid()").fetchone()[0])
        rows = [r[0] for r in conn.execute(
            "select body from public.issuer_notes order by body").fetchall()]
        conn.execute("commit")
        return uid, rows

    assert visible(env.token(env.ka, u)) == (u, ["u at a"])
    assert visible(env.token(env.kb, u)) == (u, ["u at b"])
    assert visible(env.token(env.ka, v)) == (v, ["v at a"])
    # No identity: nothing.
    assert conn.execute("select count(*) from public.issuer_notes").fetchone()[0] == 0

    forged = env.token(env.kb, u, iss=ISS_A)
    assert_wrong_issuer(conn, forged)
    assert conn.execute("select count(*) from public.issuer_notes").fetchone()[0] == 0
