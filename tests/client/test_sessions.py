"""Sessions inside PostgreSQL, against the real server, as the roles a deployment uses:
auth.create_session (sign-in), auth.refresh_session (rotating refresh tokens), devices and
sign-out (auth.list_sessions / end_session / sign_out / revoke_*), step-up
(auth.update_session_aal), the refresh token in a PostgREST cookie
(auth.refresh_session_cookie), auth.purge_sessions, and a hot standby.

Callers:

* ``signin``        - LOGIN, a member of ``session_auth_issuer``: what an app's sign-in code
  runs as once it has checked the credentials;
* ``authenticator`` - LOGIN NOINHERIT, granted ``anon`` and ``authenticated`` (PostgREST):
  refreshes as ``anon``; auth.authenticate(access token) switches it to ``authenticated``
  for the user's own session management;
* ``key_admin``     - a member of ``session_auth_admin``;
* ``app_user``      - a plain role; ``postgres`` only sets things up, reads auth.sessions and
  simulates the passing of time.

Theft detection and concurrency live in test_session_concurrency.py.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid

import jwt
import psycopg
import pytest
from psycopg.rows import dict_row

from client_support import b64url, b64url_decode, make_key, now, split
from conftest import APP_USER, KEY_ADMIN, PG_BIN, raises_sqlstate

AUTHENTICATOR = "authenticator"
SIGNIN = "signin"
ISSUER_ROLE = "session_auth_issuer"
OK = "ok"
EPS = 1e-3  # float rounding of microsecond timestamps

TEXT, INT4, INT8, UUID = 25, 23, 20, 2950
GOTRUE_COLUMNS = [("access_token", TEXT), ("token_type", TEXT), ("expires_in", INT4),
                  ("expires_at", INT8), ("refresh_token", TEXT), ("session_id", UUID)]
LIST_COLUMNS = ["session_id", "created_at", "refreshed_at", "user_agent", "ip", "aal", "tag",
                "not_after", "is_current"]
REGISTERED = ("sub", "aud", "iss", "iat", "exp", "nbf", "jti", "session_id", "aal", "amr")
RESTORED_DB = "restored_sessions"

ROLE_SETUP = (
    "create role anon nologin",
    "create role authenticated nologin",
    f"create role {AUTHENTICATOR} login noinherit",
    f"grant anon, authenticated to {AUTHENTICATOR}",
    f"create role {SIGNIN} login",
    f"grant {ISSUER_ROLE} to {SIGNIN}",
)

# The app's MFA check, as a deployment writes it: SECURITY DEFINER, owned by the sign-in role,
# callable by the signed-in user, raising the bound identity's session to aal2.
CONFIRM_MFA = (
    """create function public.confirm_mfa(amr jsonb default null)
       returns table (access_token text, token_type text, expires_in integer,
                      expires_at bigint, refresh_token text, session_id uuid)
       language sql security definer set search_path = pg_catalog, pg_temp
       as $$ select * from auth.update_session_aal('aal2', amr) $$""",
    f"alter function public.confirm_mfa(jsonb) owner to {SIGNIN}",
    "revoke execute on function public.confirm_mfa(jsonb) from public",
    "grant execute on function public.confirm_mfa(jsonb) to authenticated",
)


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def roles(cluster):
    for statement in ROLE_SETUP + CONFIRM_MFA:
        cluster.sql(statement)
    return cluster


def _uid() -> str:
    return str(uuid.uuid4())


def claims_of(token: str) -> dict:
    return split(token)[1]


def one(conn, query: str, params=None) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    assert len(rows) == 1, rows
    return rows[0]


def all_rows(conn, query: str, params=None) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


CASTS = {"claims": "::jsonb", "amr": "::jsonb", "ip": "::inet"}


def call(function: str, positional: list, named: dict) -> tuple[str, list]:
    """`select * from function(…)`, optional arguments in named notation."""
    parts, params = ["%s"] * len(positional), list(positional)
    for name, value in named.items():
        parts.append(f"{name} => %s{CASTS.get(name, '')}")
        params.append(json.dumps(value) if name in ("claims", "amr") else value)
    return f"select * from {function}({', '.join(parts)})", params


def verdict(conn, token: str) -> str:
    """'ok' or 'SQLSTATE message' of auth.verify(token) on `conn`."""
    try:
        conn.execute("select auth.verify(%s)", [token])
    except psycopg.Error as error:
        if not conn.autocommit:
            conn.rollback()
        return f"{error.sqlstate} {error.diag.message_primary}"
    return OK


def is_refused(result: str) -> bool:
    return result.startswith("28000 ") and "revoked" in result


def put_a_signing_key_in_use(pg) -> str:
    """A fresh ES256 key, in use. The `pg` fixture empties auth.keys; should a key an earlier
    test put in use still be the signing key, the new one is rotated in."""
    with psycopg.connect(host="127.0.0.1", port=pg.port, user=KEY_ADMIN, dbname="postgres",
                         autocommit=True) as admin:
        kid = admin.execute("select auth.generate_key()").fetchone()[0]
        state = admin.execute("select state from auth.signing_keys() where kid = %s",
                              [kid]).fetchone()[0]
        if state != "in_use":
            assert admin.execute("select auth.rotate_signing_key()").fetchone()[0] == kid
    return kid


class Env:
    def __init__(self, pg):
        self.pg = pg
        self.kid = put_a_signing_key_in_use(pg)
        self._cached: dict[str, psycopg.Connection] = {}

    # connections
    def anon(self, autocommit: bool = True) -> psycopg.Connection:
        """authenticator as `anon`, as PostgREST runs a request without a token."""
        conn = self.pg.connect(AUTHENTICATOR, autocommit=autocommit)
        conn.execute("set role anon")
        if not autocommit:
            conn.commit()
        return conn

    def issuer(self) -> psycopg.Connection:
        return self.pg.connect(SIGNIN)

    def admin(self) -> psycopg.Connection:
        return self.pg.connect(KEY_ADMIN)

    def user(self, access_token: str) -> psycopg.Connection:
        """authenticator inside a transaction, switched to the token's identity and role."""
        conn = self.pg.connect(AUTHENTICATOR, autocommit=False)
        conn.execute("select auth.authenticate(%s)", [access_token])
        return conn

    def cached(self, name: str) -> psycopg.Connection:
        conn = self._cached.get(name)
        if conn is None or conn.closed:
            conn = {"issuer": self.issuer, "anon": self.anon, "admin": self.admin,
                    "verifier": lambda: self.pg.connect(AUTHENTICATOR),
                    "su": self.pg.connect}[name]()
            self._cached[name] = conn
        return conn

    def set_database(self, name: str, value: str) -> None:
        """A per-database setting (reset by the `pg` fixture), seen by new connections."""
        self.pg.sql(f"alter database postgres set {name} = '{value}'")
        for conn in self._cached.values():
            conn.close()
        self._cached.clear()

    # sessions
    def create(self, user_id: str | None = None, conn=None, **named) -> dict:
        user_id = _uid() if user_id is None else user_id
        row = one(conn or self.cached("issuer"), *call("auth.create_session", [user_id], named))
        row["user_id"] = user_id
        return row

    def refresh(self, token: str, conn=None, **named) -> dict:
        return one(conn or self.cached("anon"), *call("auth.refresh_session", [token], named))

    def refresh_refused(self, token: str, reason: str, conn=None) -> None:
        with raises_sqlstate("28000") as caught:
            self.refresh(token, conn=conn)
        assert reason in caught.message, caught.message

    def verdict(self, token: str) -> str:
        return verdict(self.cached("verifier"), token)

    def row(self, session_id) -> dict:
        return one(self.cached("su"),
                   "select *, extract(epoch from created_at)::float8 as created_epoch, "
                   "extract(epoch from refreshed_at)::float8 as refreshed_epoch, "
                   "extract(epoch from not_after)::float8 as not_after_epoch "
                   "from auth.sessions where id = %s", [session_id])

    def counter(self, session_id) -> int:
        return self.row(session_id)["refresh_counter"]

    def assert_ended(self, session: dict, reason: str) -> None:
        row = self.row(session["session_id"])
        assert row["ended_at"] is not None and row["end_reason"] == reason, row


@pytest.fixture
def env(roles, pg):
    return Env(pg)


def sleep_until(epoch: float) -> None:
    time.sleep(max(0.0, epoch - time.time()))


# == auth.create_session ======================================================================


def test_create_session_returns_one_gotrue_row(env):
    """One row: access_token text, token_type 'bearer', expires_in integer, expires_at bigint,
    refresh_token text, session_id uuid; the session exists and its access token verifies."""
    with env.issuer().cursor() as cur:
        cur.execute("select * from auth.create_session(%s)", [_uid()])
        rows = cur.fetchall()
        described = [(c.name, c.type_code) for c in cur.description]
    assert described == GOTRUE_COLUMNS
    assert len(rows) == 1
    access, token_type, expires_in, expires_at, refresh, session_id = rows[0]
    assert token_type == "bearer"
    assert isinstance(session_id, uuid.UUID)
    assert access.count(".") == 2 and refresh and refresh != access
    assert 3598 <= expires_in <= 3600
    assert abs(expires_at - claims_of(access)["exp"]) < 1
    assert abs(expires_at - (time.time() + expires_in)) <= 3
    assert env.verdict(access) == OK
    assert env.row(session_id)["ended_at"] is None


def test_access_token_carries_supabase_claims_and_the_extra_ones(env):
    env.set_database("pg_session_auth.issuer", "https://auth.example.test/auth/v1")
    user = _uid()
    extra = {"email": "ada@example.com", "phone": "+15550100",
             "app_metadata": {"provider": "email", "providers": ["email"]},
             "user_metadata": {"name": "Ada"}}
    before = time.time()
    row = env.create(user, claims=extra, user_agent="Firefox/130", ip="192.0.2.7",
                     tag="laptop")
    after = time.time()
    header, claims, _ = split(row["access_token"])
    assert header == {"alg": "ES256", "typ": "JWT", "kid": env.kid}
    assert claims["sub"] == user
    assert claims["role"] == "authenticated"
    assert claims["aud"] in ("authenticated", ["authenticated"])
    assert claims["iss"] == "https://auth.example.test/auth/v1"
    assert before - 1 <= claims["iat"] <= after + 1
    assert abs(claims["exp"] - claims["iat"] - 3600) < 1
    assert uuid.UUID(claims["jti"])
    assert claims["session_id"] == str(row["session_id"])
    assert claims["aal"] == "aal1"
    assert len(claims["amr"]) == 1 and claims["amr"][0]["method"] == "password"
    assert abs(claims["amr"][0]["timestamp"] - claims["iat"]) < 2
    assert claims["is_anonymous"] is False
    for name, value in extra.items():
        assert claims[name] == value
    # The database verifies it, and so does an independent verifier given auth.jwks().
    verified = env.cached("verifier").execute("select auth.verify(%s)",
                                              [row["access_token"]]).fetchone()[0]
    assert verified == claims
    jwks = env.pg.sql("select auth.jwks()", user=APP_USER)[0][0]
    jwk = next(k for k in jwks["keys"] if k["kid"] == env.kid)
    decoded = jwt.decode(row["access_token"], jwt.PyJWK(jwk).key, algorithms=["ES256"],
                         audience="authenticated", issuer="https://auth.example.test/auth/v1")
    assert decoded == claims
    # What the session row keeps.
    stored = env.row(row["session_id"])
    assert stored["user_id"] == user and stored["aal"] == "aal1" and stored["tag"] == "laptop"
    assert stored["initial_user_agent"] == "Firefox/130"
    assert str(stored["initial_ip"]).split("/")[0] == "192.0.2.7"


def test_audience_setting_no_issuer_and_chosen_role_aal_amr_and_anonymity(env):
    env.set_database("pg_session_auth.audience", "my-app")
    amr = [{"method": "oauth", "timestamp": now()}]
    row = env.create(claims={"role": "anon", "is_anonymous": True}, aal="aal2", amr=amr)
    claims = claims_of(row["access_token"])
    assert "iss" not in claims
    assert claims["aud"] in ("my-app", ["my-app"])
    assert claims["role"] == "anon"
    assert claims["is_anonymous"] is True
    assert claims["aal"] == "aal2"
    assert claims["amr"] == amr
    assert env.verdict(row["access_token"]) == OK


@pytest.mark.parametrize("claim", REGISTERED)
def test_claims_may_not_set_a_registered_claim(env, claim):
    user = _uid()
    value = {"exp": now() + 60, "iat": now(), "nbf": now(), "amr": [{"method": "x"}]}.get(
        claim, "forged")
    with raises_sqlstate("22023"):
        env.create(user, claims={claim: value})
    assert env.pg.sql("select count(*) from auth.sessions where user_id = %s", [user]) == [(0,)]


@pytest.mark.parametrize("user_id", ["8f14e45f-ceea-467f-a0e6-f1cd3ae5c2a1", "github|4242",
                                     "x", "u" * 1024])
def test_uuid_and_non_uuid_subjects(env, user_id):
    row = env.create(user_id)
    assert claims_of(row["access_token"])["sub"] == user_id
    assert env.verdict(row["access_token"]) == OK
    refreshed = env.refresh(row["refresh_token"])
    assert claims_of(refreshed["access_token"])["sub"] == user_id
    conn = env.user(refreshed["access_token"])
    listed = all_rows(conn, "select * from auth.list_sessions()")
    assert [r["session_id"] for r in listed if r["is_current"]] == [row["session_id"]]
    conn.commit()


@pytest.mark.parametrize("user_id", ["", "u" * 1025])
def test_subject_must_be_1_to_1024_bytes(env, user_id):
    with pytest.raises(psycopg.Error) as caught:
        env.create(user_id)
    assert caught.value.sqlstate.startswith("22"), caught.value


@pytest.mark.parametrize("who", ["app_user", "anon", "authenticated"])
def test_create_session_refused_to_request_roles(env, who):
    if who == "app_user":
        conn = env.pg.connect(APP_USER)
    elif who == "anon":
        conn = env.anon()
    else:
        conn = env.user(env.create()["access_token"])
    with raises_sqlstate("42501"):
        env.create(conn=conn)


@pytest.mark.parametrize("who", [SIGNIN, KEY_ADMIN, "postgres"])
def test_create_session_allowed_to_the_issuer_role_and_admins(env, who):
    row = env.create(conn=env.pg.connect(who))
    assert env.verdict(row["access_token"]) == OK
    assert env.refresh(row["refresh_token"])["session_id"] == row["session_id"]


@pytest.mark.parametrize("who", [APP_USER, AUTHENTICATOR, SIGNIN, "anon", "authenticated"])
def test_sessions_table_is_not_readable_by_request_roles(env, who):
    env.create()
    if who == "anon":
        conn = env.anon()
    elif who == "authenticated":
        conn = env.user(env.create()["access_token"])
    else:
        conn = env.pg.connect(who)
    with raises_sqlstate("42501"):
        conn.execute("select * from auth.sessions")
    assert env.admin().execute("select count(*) from auth.sessions").fetchone()[0] >= 1


# == auth.refresh_session =====================================================================


def test_refresh_returns_a_new_pair_and_supersedes_the_presented_token(env):
    s = env.create(user_agent="Firefox/130", ip="192.0.2.1")
    counter = env.counter(s["session_id"])
    with env.cached("anon").cursor() as cur:
        cur.execute("select * from auth.refresh_session(%s, %s, %s::inet)",
                    [s["refresh_token"], "Firefox/131", "192.0.2.2"])
        described = [(c.name, c.type_code) for c in cur.description]
        rows = cur.fetchall()
    assert described == GOTRUE_COLUMNS and len(rows) == 1
    r = dict(zip([name for name, _ in GOTRUE_COLUMNS], rows[0]))
    assert r["session_id"] == s["session_id"] and r["token_type"] == "bearer"
    assert r["refresh_token"] not in (s["refresh_token"], None)
    assert r["access_token"] != s["access_token"]
    new, old = claims_of(r["access_token"]), claims_of(s["access_token"])
    assert new["jti"] != old["jti"] and new["session_id"] == old["session_id"]
    assert new["sub"] == old["sub"] and new["iat"] >= old["iat"]
    assert env.verdict(r["access_token"]) == OK
    row = env.row(s["session_id"])
    assert row["refresh_counter"] == counter + 1
    assert row["refreshed_at"] is not None
    assert row["user_agent"] == "Firefox/131" and str(row["ip"]).split("/")[0] == "192.0.2.2"
    assert row["initial_user_agent"] == "Firefox/130"
    # Superseded: presenting it again rotates nothing and yields the current token.
    again = env.refresh(s["refresh_token"])
    assert again["refresh_token"] == r["refresh_token"]
    assert env.counter(s["session_id"]) == counter + 1
    # The new one is current: it rotates.
    third = env.refresh(r["refresh_token"])
    assert third["refresh_token"] not in (r["refresh_token"], s["refresh_token"])
    assert env.counter(s["session_id"]) == counter + 2


def test_immediately_previous_token_returns_the_current_one(env):
    s = env.create()
    r1 = env.refresh(s["refresh_token"])
    counter = env.counter(s["session_id"])
    for _ in range(3):
        again = env.refresh(s["refresh_token"])
        assert again["refresh_token"] == r1["refresh_token"]
        assert again["session_id"] == s["session_id"]
        assert claims_of(again["access_token"])["jti"] != claims_of(r1["access_token"])["jti"]
        assert env.verdict(again["access_token"]) == OK
    assert env.counter(s["session_id"]) == counter


def test_any_token_superseded_within_the_reuse_interval_returns_the_current_one(env):
    """Default interval 10 s: tokens 0..3 all superseded within it hand back token 4."""
    s = env.create()
    tokens = [s["refresh_token"]]
    for _ in range(4):
        tokens.append(env.refresh(tokens[-1])["refresh_token"])
    counter = env.counter(s["session_id"])
    for old in tokens[:-1]:
        assert env.refresh(old)["refresh_token"] == tokens[-1]
    assert env.counter(s["session_id"]) == counter
    assert env.row(s["session_id"])["ended_at"] is None


@pytest.mark.parametrize("who", ["anon", APP_USER, AUTHENTICATOR, SIGNIN, KEY_ADMIN,
                                 "authenticated"])
def test_every_role_may_refresh(env, who):
    s = env.create()
    if who == "anon":
        conn = env.anon()
    elif who == "authenticated":
        conn = env.user(env.create()["access_token"])
    else:
        conn = env.pg.connect(who)
    r = env.refresh(s["refresh_token"], conn=conn)
    if not conn.autocommit:
        conn.commit()
    assert r["session_id"] == s["session_id"]
    assert env.verdict(r["access_token"]) == OK


def token_forms(token: str) -> list[str]:
    """Every way a refresh token, its payload or its tag could appear in a table or dump."""
    raw = b64url_decode(token)
    tag = raw[-16:]
    return [token, token.encode().hex(), raw.hex(), tag.hex(), b64url(tag),
            base64.b64encode(tag).decode().rstrip("="), base64.b64encode(raw).decode().rstrip("=")]


def every_table_as_text(conn) -> str:
    tables = [r[0] for r in conn.execute(
        "select format('%I.%I', n.nspname, c.relname) from pg_class c "
        "join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p', 'm') "
        "and n.nspname not in ('pg_catalog', 'information_schema') "
        "and n.nspname not like 'pg_toast%'")]
    assert "auth.sessions" in tables
    return "\n".join(
        conn.execute(f"select coalesce(string_agg(to_jsonb(t)::text, E'\\n'), '') "
                     f"from {table} t").fetchone()[0] for table in tables)


def test_refresh_tokens_are_never_stored(env):
    s = env.create()
    tokens = [s["refresh_token"]]
    for _ in range(3):
        tokens.append(env.refresh(tokens[-1])["refresh_token"])
    assert len(set(tokens)) == 4
    raw = b64url_decode(tokens[0])
    assert raw[1:17] == s["session_id"].bytes  # version | session id | counter | tag
    # Every text and bytea column of auth.sessions, and of every other table too.
    row = one(env.cached("su"), "select * from auth.sessions where id = %s",
              [s["session_id"]])
    stored = "\n".join(v.hex() if isinstance(v, bytes) else str(v) for v in row.values())
    text = every_table_as_text(env.cached("su"))
    for token in tokens:
        for form in token_forms(token):
            assert form not in stored and form not in text, form


def test_pg_dump_holds_no_refresh_token_and_a_restore_refreshes(env, tmp_path):
    s = env.create()
    tokens = [s["refresh_token"]]
    for _ in range(2):
        tokens.append(env.refresh(tokens[-1])["refresh_token"])
    dump = tmp_path / "dump.sql"
    conn_args = ["-h", "127.0.0.1", "-p", str(env.pg.port), "-U", "postgres"]
    subprocess.run([f"{PG_BIN}/pg_dump", *conn_args, "-d", "postgres", "-f", str(dump)],
                   check=True, capture_output=True, timeout=120)
    text = dump.read_text()
    assert str(s["session_id"]) in text  # the session itself is kept
    for token in tokens:
        for form in token_forms(token):
            assert form not in text, form
    # The same server (same secret): the restored session refreshes as before.
    env.pg.sql(f"drop database if exists {RESTORED_DB} with (force)")
    env.pg.sql(f"create database {RESTORED_DB}")
    try:
        result = subprocess.run([f"{PG_BIN}/psql", *conn_args, "-d", RESTORED_DB, "-X", "-q",
                                 "-v", "ON_ERROR_STOP=1", "-f", str(dump)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        with psycopg.connect(host="127.0.0.1", port=env.pg.port, user=AUTHENTICATOR,
                             dbname=RESTORED_DB, autocommit=True) as conn:
            conn.execute("set role anon")
            r = env.refresh(tokens[-1], conn=conn)
            assert r["session_id"] == s["session_id"]
            assert r["refresh_token"] not in tokens
            assert verdict(conn, r["access_token"]) == OK
    finally:
        env.pg.sql(f"drop database if exists {RESTORED_DB} with (force)")


def _tampered(token: str) -> list[str]:
    raw = bytearray(b64url_decode(token))
    out = []
    for index in (0, 1, 16, 17, 24, 25, len(raw) - 1):  # version, session, counter, tag
        flipped = bytearray(raw)
        flipped[index] ^= 0x01
        out.append(b64url(bytes(flipped)))
    bumped = bytearray(raw)
    bumped[24] = (bumped[24] + 1) % 256  # a later counter, the old tag
    out.append(b64url(bytes(bumped)))
    return out


def test_invalid_garbage_and_tampered_refresh_tokens_are_refused(env):
    s = env.create()
    other = env.create()
    rt = s["refresh_token"]
    raw = b64url_decode(rt)
    # Another session's id with this token's counter and tag.
    spliced = b64url(raw[:1] + other["session_id"].bytes + raw[17:])
    bad = ["", " ", "garbage", "not.a.token", rt[:-1], rt[1:], rt + "A", rt[::-1],
           rt.swapcase(), "A" * 10_000, s["access_token"], spliced,
           b64url(b"\x01" + s["session_id"].bytes + b"\0" * 24), *_tampered(rt)]
    counter = env.counter(s["session_id"])
    for token in bad:
        assert token != rt
        env.refresh_refused(token, "invalid refresh token")
    # None of that touched the session: its token still rotates.
    assert env.counter(s["session_id"]) == counter
    assert env.row(s["session_id"])["ended_at"] is None
    assert env.refresh(rt)["session_id"] == s["session_id"]


# == expiry ===================================================================================


def test_access_token_lifetime_setting(env):
    env.set_database("pg_session_auth.access_token_lifetime", "90s")
    s = env.create()
    r = env.refresh(s["refresh_token"])
    for row in (s, r):
        claims = claims_of(row["access_token"])
        assert abs(claims["exp"] - claims["iat"] - 90) < 1
        assert 88 <= row["expires_in"] <= 90
        assert abs(row["expires_at"] - claims["exp"]) < 1


def test_session_timebox_caps_access_tokens_and_then_refuses(env):
    env.set_database("pg_session_auth.session_timebox", "3s")
    s = env.create()
    deadline = env.row(s["session_id"])["created_epoch"] + 3
    claims = claims_of(s["access_token"])
    assert claims["exp"] <= deadline + EPS
    assert s["expires_at"] <= deadline + EPS and s["expires_in"] <= 3
    time.sleep(1)
    r = env.refresh(s["refresh_token"])
    # Counted from sign-in, not from the refresh.
    assert claims_of(r["access_token"])["exp"] <= deadline + EPS
    assert r["expires_at"] <= deadline + EPS and r["expires_in"] <= 2
    sleep_until(deadline + 0.5)
    env.refresh_refused(r["refresh_token"], "session timed out")


def test_inactivity_timeout_caps_access_tokens_and_then_refuses(env):
    env.set_database("pg_session_auth.session_inactivity_timeout", "2s")
    s = env.create()
    created = env.row(s["session_id"])["created_epoch"]
    first = claims_of(s["access_token"])["exp"]
    assert first <= created + 2 + EPS and s["expires_in"] <= 2
    time.sleep(1)
    r = env.refresh(s["refresh_token"])
    refreshed = env.row(s["session_id"])["refreshed_epoch"]
    second = claims_of(r["access_token"])["exp"]
    # Counted from the last refresh: extended, and capped again.
    assert second <= refreshed + 2 + EPS
    assert second > first
    sleep_until(refreshed + 2.7)
    env.refresh_refused(r["refresh_token"], "session timed out")


def test_not_after_caps_access_tokens_and_then_refuses(env):
    s = env.create()
    not_after = env.pg.sql(
        "update auth.sessions set not_after = now() + interval '3 seconds' where id = %s "
        "returning extract(epoch from not_after)::float8", [s["session_id"]])[0][0]
    r = env.refresh(s["refresh_token"])
    assert claims_of(r["access_token"])["exp"] <= not_after + EPS
    assert r["expires_at"] <= not_after + EPS and r["expires_in"] <= 3
    sleep_until(not_after + 0.5)
    env.refresh_refused(r["refresh_token"], "session expired")


# == devices and sign-out =====================================================================


def test_list_sessions_shows_the_users_own_active_sessions(env):
    a, b = _uid(), _uid()
    s1 = env.create(a, user_agent="Firefox/130", ip="192.0.2.1", tag="laptop")
    s2 = env.create(a, user_agent="Safari/17", ip="192.0.2.2", tag="phone")
    s3 = env.create(a)
    sb = env.create(b)
    assert env.admin().execute("select auth.end_session(%s)", [s3["session_id"]]).fetchone()[0]
    r2 = env.refresh(s2["refresh_token"], user_agent="Safari/18", ip="192.0.2.3")
    conn = env.user(s1["access_token"])
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("select * from auth.list_sessions()")
        assert [c.name for c in cur.description] == LIST_COLUMNS
        listed = {r["session_id"]: r for r in cur.fetchall()}
    conn.commit()
    assert set(listed) == {s1["session_id"], s2["session_id"]}
    first, second = listed[s1["session_id"]], listed[s2["session_id"]]
    assert first["is_current"] is True and second["is_current"] is False
    assert (first["user_agent"], str(first["ip"]).split("/")[0], first["tag"],
            first["aal"]) == ("Firefox/130", "192.0.2.1", "laptop", "aal1")
    assert (second["user_agent"], str(second["ip"]).split("/")[0], second["tag"]) == (
        "Safari/18", "192.0.2.3", "phone")
    assert second["refreshed_at"] is not None and first["created_at"] is not None
    material = [x for s in (s1, s2, s3, sb, r2) for x in (s["access_token"], s["refresh_token"])]
    for row in listed.values():
        for value in row.values():
            assert not any(m in str(value) for m in material)


def test_admin_lists_any_users_sessions(env):
    a = _uid()
    s1, s2 = env.create(a), env.create(a)
    env.create()
    listed = all_rows(env.admin(), "select * from auth.list_sessions(%s)", [a])
    assert {r["session_id"] for r in listed} == {s1["session_id"], s2["session_id"]}
    assert not any(r["is_current"] for r in listed)
    named = env.create("github|99")
    assert [r["session_id"] for r in all_rows(env.admin(), "select * from auth.list_sessions(%s)",
                                              ["github|99"])] == [named["session_id"]]


def test_a_user_may_not_list_another_users_sessions(env):
    a, b = env.create(), env.create()
    conn = env.user(a["access_token"])
    with raises_sqlstate("42501"):
        conn.execute("select * from auth.list_sessions(%s)", [b["user_id"]])
    conn.rollback()
    with raises_sqlstate("42501"):
        env.pg.connect(APP_USER).execute("select * from auth.list_sessions(%s)", [b["user_id"]])
    with raises_sqlstate("42501"):
        env.pg.connect(SIGNIN).execute("select * from auth.list_sessions(%s)", [b["user_id"]])


def test_end_own_session(env):
    a = _uid()
    s1, s2 = env.create(a), env.create(a)
    watcher = env.cached("verifier")
    assert verdict(watcher, s2["access_token"]) == OK
    conn = env.user(s1["access_token"])
    assert conn.execute("select auth.end_session(%s)", [s2["session_id"]]).fetchone() == (True,)
    conn.commit()
    env.assert_ended(s2, "ended")
    env.refresh_refused(s2["refresh_token"], "session ended")
    assert is_refused(verdict(watcher, s2["access_token"]))
    # The caller's own session is untouched.
    assert verdict(watcher, s1["access_token"]) == OK
    assert env.refresh(s1["refresh_token"])["session_id"] == s1["session_id"]
    # Ending the session one is signed in with.
    conn = env.user(s1["access_token"])
    assert conn.execute("select auth.end_session(%s)", [s1["session_id"]]).fetchone() == (True,)
    conn.commit()
    assert is_refused(verdict(watcher, s1["access_token"]))
    assert env.row(s1["session_id"])["ended_at"] is not None


def test_end_another_users_session_is_refused_except_to_admins(env):
    mine, theirs = env.create(), env.create()
    conn = env.user(mine["access_token"])
    with raises_sqlstate("42501"):
        conn.execute("select auth.end_session(%s)", [theirs["session_id"]])
    conn.rollback()
    with raises_sqlstate("42501"):
        env.pg.connect(APP_USER).execute("select auth.end_session(%s)", [theirs["session_id"]])
    assert env.row(theirs["session_id"])["ended_at"] is None
    assert env.refresh(theirs["refresh_token"])["session_id"] == theirs["session_id"]
    admin = env.admin()
    assert admin.execute("select auth.end_session(%s)",
                         [theirs["session_id"]]).fetchone() == (True,)
    env.assert_ended(theirs, "ended")


@pytest.mark.parametrize("scope", ["local", "others", "global"])
def test_sign_out_ends_the_matching_session_rows(env, scope):
    """Three sessions of one user and one of another; the caller signs out with session 1's
    access token. A token of session 2 issued 20 s ahead of the clock (within the leeway) is
    refused too when session 2 ends: refusal is by session id, whatever the iat."""
    a = _uid()
    s1, s2, s3, sb = env.create(a), env.create(a), env.create(a), env.create()
    ext = make_key("HS256", kid=f"ext-{uuid.uuid4().hex[:8]}")
    env.admin().execute("select auth.add_key(%s, 'HS256', %s)", [ext.kid, ext.secret_text])
    ahead = ext.sign({"sub": a, "role": "authenticated", "session_id": str(s2["session_id"]),
                      "iat": now() + 20, "exp": now() + 600})
    watcher = env.cached("verifier")
    for token in (s1["access_token"], s2["access_token"], s3["access_token"], ahead):
        assert verdict(watcher, token) == OK
    conn = env.user(s1["access_token"])
    conn.execute("select auth.sign_out(%s)", [scope])
    conn.commit()
    ended = {"local": [s1], "others": [s2, s3], "global": [s1, s2, s3]}[scope]
    ended_ids = {s["session_id"] for s in ended}
    for s in (s1, s2, s3, sb):
        if s["session_id"] in ended_ids:
            env.assert_ended(s, "signed out")
            assert is_refused(verdict(watcher, s["access_token"]))
            env.refresh_refused(s["refresh_token"], "session ended")
        else:
            assert env.row(s["session_id"])["ended_at"] is None
            assert verdict(watcher, s["access_token"]) == OK
            assert env.refresh(s["refresh_token"])["session_id"] == s["session_id"]
    if s2["session_id"] in ended_ids:
        assert is_refused(verdict(watcher, ahead))
    else:
        assert verdict(watcher, ahead) == OK


def test_sign_in_right_after_a_global_sign_out_gets_working_tokens(env):
    a = _uid()
    s1 = env.create(a)
    conn = env.user(s1["access_token"])
    conn.execute("select auth.sign_out('global')")
    conn.commit()
    fresh = env.create(a)  # at once: the same second
    assert is_refused(env.verdict(s1["access_token"]))
    assert env.verdict(fresh["access_token"]) == OK
    conn = env.user(fresh["access_token"])
    assert conn.execute("select auth.user_id()").fetchone() == (a,)
    listed = all_rows(conn, "select * from auth.list_sessions()")
    assert [r["session_id"] for r in listed] == [fresh["session_id"]]
    conn.commit()
    r = env.refresh(fresh["refresh_token"])
    assert env.verdict(r["access_token"]) == OK


def test_revoke_user_and_revoke_session_end_session_rows(env):
    a = _uid()
    s1, s2, other = env.create(a), env.create(a), env.create()
    r1 = env.refresh(s1["refresh_token"])
    admin = env.admin()
    admin.execute("select auth.revoke_user(%s)", [a])
    for s, current in ((s1, r1), (s2, s2)):
        env.assert_ended(s, "revoked")
        env.refresh_refused(current["refresh_token"], "session ended")
        assert is_refused(env.verdict(current["access_token"]))
    fresh = env.create(a)
    assert env.verdict(fresh["access_token"]) == OK
    assert env.refresh(fresh["refresh_token"])["session_id"] == fresh["session_id"]
    # revoke_session: that session only.
    assert env.row(other["session_id"])["ended_at"] is None
    admin.execute("select auth.revoke_session(%s)", [other["session_id"]])
    env.assert_ended(other, "revoked")
    env.refresh_refused(other["refresh_token"], "session ended")
    assert env.verdict(fresh["access_token"]) == OK


# == step-up ==================================================================================


def step_up(env, access_token: str, **named) -> dict:
    """The signed-in user passes the app's MFA check (public.confirm_mfa)."""
    conn = env.user(access_token)
    row = one(conn, *call("public.confirm_mfa", [], named))
    conn.commit()
    return row


def test_update_session_aal_returns_a_new_pair_and_bars_earlier_refresh_tokens(env):
    s = env.create()
    r1 = env.refresh(s["refresh_token"])
    amr = [{"method": "totp", "timestamp": now()}]
    with env.user(r1["access_token"]).cursor() as cur:
        cur.execute(*call("public.confirm_mfa", [], {"amr": amr}))
        assert [(c.name, c.type_code) for c in cur.description] == GOTRUE_COLUMNS
        up = dict(zip([n for n, _ in GOTRUE_COLUMNS], cur.fetchone()))
        cur.connection.commit()
    assert up["session_id"] == s["session_id"]
    assert up["refresh_token"] not in (s["refresh_token"], r1["refresh_token"])
    claims = claims_of(up["access_token"])
    assert claims["aal"] == "aal2" and claims["session_id"] == str(s["session_id"])
    assert any(m.get("method") == "totp" for m in claims["amr"])
    assert env.verdict(up["access_token"]) == OK
    assert env.row(s["session_id"])["aal"] == "aal2"
    # Every refresh token issued before the step-up: refused (within the reuse interval),
    # without ending the session.
    for old in (r1["refresh_token"], s["refresh_token"]):
        env.refresh_refused(old, "invalid refresh token")
    assert env.row(s["session_id"])["ended_at"] is None
    after = env.refresh(up["refresh_token"])
    assert claims_of(after["access_token"])["aal"] == "aal2"
    conn = env.user(after["access_token"])
    assert [r["aal"] for r in all_rows(conn, "select * from auth.list_sessions()")] == ["aal2"]
    conn.commit()


def test_the_authenticated_user_may_not_raise_their_own_level(env):
    """A user may not raise their own session's level (that would skip the app's MFA
    check): auth.update_session_aal is for session_auth_issuer and admins (42501 otherwise)."""
    s = env.create()
    conn = env.user(s["access_token"])
    with raises_sqlstate("42501"):
        conn.execute("select * from auth.update_session_aal('aal2')")
    conn.rollback()


# == refresh token in a cookie (PostgREST) ====================================================


def parse_cookie(text: str) -> dict:
    first, *attributes = [part.strip() for part in text.split(";")]
    name, _, value = first.partition("=")
    attrs = {}
    for attribute in attributes:
        key, _, val = attribute.partition("=")
        attrs[key.lower()] = val
    return {"name": name, "value": value, "attrs": attrs, "text": text}


def set_cookies(conn) -> list[dict]:
    headers = conn.execute("select current_setting('response.headers', true)").fetchone()[0]
    assert headers, "no response.headers"
    parsed = json.loads(headers)
    assert isinstance(parsed, list), parsed
    return [parse_cookie(value) for header in parsed for name, value in header.items()
            if name.lower() == "set-cookie"]


def postgrest_request(conn, path: str, cookies: dict, role: str | None = None,
                      claims: dict | None = None) -> None:
    """What PostgREST sets, transaction-locally, at the start of a request."""
    cookie_header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    conn.execute(
        "select set_config('request.method', 'POST', true), "
        "set_config('request.path', %s, true), set_config('request.headers', %s, true), "
        "set_config('request.cookies', %s, true)",
        [path, json.dumps({"cookie": cookie_header, "user-agent": "Mozilla/5.0",
                           "content-type": "application/json"}), json.dumps(cookies)])
    if role is not None:
        conn.execute("select set_config('role', %s, true)", [role])
    if claims is not None:
        conn.execute("select set_config('request.jwt.claims', %s, true)", [json.dumps(claims)])


def assert_refresh_cookie(cookie: dict, name: str = "refresh_token", path: str = "/") -> None:
    assert cookie["name"] == name, cookie
    assert "httponly" in cookie["attrs"] and "secure" in cookie["attrs"], cookie
    assert cookie["attrs"].get("samesite", "").lower() == "lax", cookie
    assert cookie["attrs"].get("path") == path, cookie


def cookie_refresh(env, cookies: dict,
                   preset_headers: list | None = None) -> tuple[dict, list, list]:
    """An anonymous PostgREST request to /rpc/refresh_session_cookie."""
    conn = env.pg.connect(AUTHENTICATOR, autocommit=False)
    postgrest_request(conn, "/rpc/refresh_session_cookie", cookies, role="anon")
    if preset_headers is not None:
        conn.execute("select set_config('response.headers', %s, true)",
                     [json.dumps(preset_headers)])
    row = one(conn, "select * from auth.refresh_session_cookie()")
    headers = json.loads(conn.execute("select current_setting('response.headers')").fetchone()[0])
    cookies_out = set_cookies(conn)
    conn.commit()
    return row, cookies_out, headers


def test_refresh_session_cookie_as_postgrest_calls_it(env):
    s = env.create()
    counter = env.counter(s["session_id"])
    row, cookies, _ = cookie_refresh(env, {"refresh_token": s["refresh_token"], "theme": "dark"})
    assert row["refresh_token"] is None
    assert row["session_id"] == s["session_id"] and row["token_type"] == "bearer"
    assert env.verdict(row["access_token"]) == OK
    assert claims_of(row["access_token"])["session_id"] == str(s["session_id"])
    assert len(cookies) == 1
    cookie = cookies[0]
    assert_refresh_cookie(cookie)
    new = cookie["value"]
    assert new and new != s["refresh_token"]
    assert s["refresh_token"] not in cookie["text"]
    assert env.counter(s["session_id"]) == counter + 1
    # The cookie's token is the session's current one: it rotates (the old one hands it back).
    assert env.refresh(s["refresh_token"])["refresh_token"] == new
    assert env.refresh(new)["refresh_token"] != new
    assert env.counter(s["session_id"]) == counter + 2


def test_refresh_cookie_name_and_path_settings(env):
    env.set_database("pg_session_auth.refresh_cookie", "sb-refresh")
    env.set_database("pg_session_auth.refresh_cookie_path", "/auth/v1")
    s = env.create()
    row, cookies, _ = cookie_refresh(env, {"refresh_token": "not-this-one",
                                           "sb-refresh": s["refresh_token"]})
    assert row["refresh_token"] is None and env.verdict(row["access_token"]) == OK
    assert len(cookies) == 1
    assert_refresh_cookie(cookies[0], name="sb-refresh", path="/auth/v1")
    assert env.refresh(cookies[0]["value"])["session_id"] == s["session_id"]


def test_refresh_cookie_keeps_response_headers_already_set(env):
    s = env.create()
    _, cookies, headers = cookie_refresh(env, {"refresh_token": s["refresh_token"]},
                                         preset_headers=[{"Cache-Control": "no-store"}])
    assert {"Cache-Control": "no-store"} in headers
    assert len(cookies) == 1


@pytest.mark.parametrize("claims_source", ["verified", "request"])
def test_sign_out_through_postgrest_clears_the_refresh_cookie(env, claims_source):
    """verified: authenticator binds the access token with auth.authenticate(); request:
    PostgREST verified it itself and set role and request.jwt.claims."""
    if claims_source == "request":
        env.set_database("pg_session_auth.claims_source", "request")
    s = env.create()
    conn = env.pg.connect(AUTHENTICATOR, autocommit=False)
    conn.execute("select set_config('response.headers', %s, true)",
                 [json.dumps([{"Cache-Control": "no-store"}])])
    if claims_source == "verified":
        postgrest_request(conn, "/rpc/sign_out", {"refresh_token": s["refresh_token"]})
        conn.execute("select auth.authenticate(%s)", [s["access_token"]])
    else:
        postgrest_request(conn, "/rpc/sign_out", {"refresh_token": s["refresh_token"]},
                          role="authenticated", claims=claims_of(s["access_token"]))
    conn.execute("select auth.sign_out()")
    cookies = set_cookies(conn)
    headers = json.loads(conn.execute("select current_setting('response.headers')").fetchone()[0])
    conn.commit()
    assert {"Cache-Control": "no-store"} in headers
    assert len(cookies) == 1, cookies
    cookie = cookies[0]
    assert_refresh_cookie(cookie)
    assert cookie["attrs"].get("max-age") == "0", cookie
    assert cookie["value"] in ("", '""'), cookie
    env.assert_ended(s, "signed out")
    env.refresh_refused(s["refresh_token"], "session ended")


# == housekeeping =============================================================================


def test_purge_sessions_removes_long_ended_or_expired_sessions_only(env):
    a = _uid()
    old_ended, recent_ended, old_expired, active, long_active = (env.create(a) for _ in range(5))
    admin = env.admin()
    for s in (old_ended, recent_ended):
        admin.execute("select auth.end_session(%s)", [s["session_id"]])
    su = env.cached("su")
    su.execute("update auth.sessions set ended_at = now() - interval '2 days' where id = %s",
               [old_ended["session_id"]])
    su.execute("update auth.sessions set ended_at = now() - interval '2 hours' where id = %s",
               [recent_ended["session_id"]])
    su.execute("update auth.sessions set not_after = now() - interval '2 days' where id = %s",
               [old_expired["session_id"]])
    su.execute("update auth.sessions set created_at = now() - interval '3 days' where id = %s",
               [long_active["session_id"]])

    def remaining() -> set:
        return {r[0] for r in su.execute("select id from auth.sessions where user_id = %s", [a])}

    with raises_sqlstate("42501"):
        env.pg.connect(APP_USER).execute("select auth.purge_sessions()")
    with raises_sqlstate("42501"):
        env.pg.connect(SIGNIN).execute("select auth.purge_sessions()")
    assert admin.execute("select auth.purge_sessions()").fetchone() == (2,)
    assert remaining() == {recent_ended["session_id"], active["session_id"],
                           long_active["session_id"]}
    assert admin.execute("select auth.purge_sessions('1 hour')").fetchone() == (1,)
    assert remaining() == {active["session_id"], long_active["session_id"]}
    for s in (active, long_active):
        assert env.refresh(s["refresh_token"])["session_id"] == s["session_id"]
    assert env.refresh(env.create(a)["refresh_token"])


# == hot standby ==============================================================================


@pytest.fixture(scope="module")
def standby_pair():
    """A primary and a streaming hot standby (test_replica's helpers), with this module's
    roles, a signing key in use and a first session made before the base backup."""
    from test_replica import Primary, Standby, wait_for_replay

    primary = Primary(preload=True)
    standby = Standby(primary)
    try:
        primary.start()
        primary.allow_replication_from_loopback()
        primary.setup_roles_and_extension()
        for statement in ROLE_SETUP:
            primary.sql(statement)
        primary.sql("select auth.generate_key()")
        primary.sql("select * from auth.create_session('standby-warm-up')")
        standby.start()
        deadline = time.monotonic() + 30
        while primary.sql("select state from pg_stat_replication") != [("streaming",)]:
            assert time.monotonic() < deadline, standby.server_log()[-3000:]
            time.sleep(0.05)
        wait_for_replay(primary, standby)
        yield primary, standby, wait_for_replay
    except BaseException:
        for name, c in (("primary", primary), ("standby", standby)):
            if c.started:
                print(f"---- {name} log ----\n" + c.server_log()[-5000:])
        raise
    finally:
        standby.stop()
        primary.stop()


def test_on_a_hot_standby_tokens_verify_but_sessions_are_not_created_or_refreshed(
        standby_pair):
    primary, standby, wait_for_replay = standby_pair
    user = _uid()
    s = one(primary.connect(SIGNIN), "select * from auth.create_session(%s)", [user])
    wait_for_replay(primary, standby)

    conn = standby.connect(AUTHENTICATOR)
    assert conn.execute("select pg_is_in_recovery()").fetchone() == (True,)
    assert verdict(conn, s["access_token"]) == OK
    conn.execute("begin")
    conn.execute("select auth.authenticate(%s)", [s["access_token"]])
    assert conn.execute("select auth.user_id(), current_user::text").fetchone() == (
        user, "authenticated")
    conn.execute("rollback")

    with raises_sqlstate("25006"):
        standby.connect(SIGNIN).execute("select * from auth.create_session(%s)", [user])
    with raises_sqlstate("25006"):
        standby.connect("postgres").execute("select * from auth.create_session(%s)", [user])
    anon = standby.connect(AUTHENTICATOR)
    anon.execute("set role anon")
    with raises_sqlstate("25006"):
        anon.execute("select * from auth.refresh_session(%s)", [s["refresh_token"]])
    cookie = standby.connect(AUTHENTICATOR, autocommit=False)
    postgrest_request(cookie, "/rpc/refresh_session_cookie",
                      {"refresh_token": s["refresh_token"]}, role="anon")
    with raises_sqlstate("25006"):
        cookie.execute("select * from auth.refresh_session_cookie()")
    cookie.rollback()

    # Nothing was consumed: the primary still rotates the token, and the standby verifies
    # the new access token once replayed.
    r = one(primary.connect("postgres"), "select * from auth.refresh_session(%s)",
            [s["refresh_token"]])
    assert r["session_id"] == s["session_id"] and r["refresh_token"] != s["refresh_token"]
    wait_for_replay(primary, standby)
    assert verdict(conn, r["access_token"]) == OK
