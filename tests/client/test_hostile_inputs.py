"""Hostile inputs to every documented function: each one is answered with a documented
SQLSTATE, never XX000 (an internal error or a Rust panic), never 22P05, and never a silent
NULL or no-op where an error is due.

* jsonb arguments that PostgreSQL accepts but `serde_json` cannot represent - a number such as
  `1e400`, nesting deeper than serde's recursion limit (128) - given to auth.is_revoked and
  auth.import_jwks: 22023, not XX000.
* Correctly HS256-signed tokens whose payload holds such values, `\\u0000`, a lone surrogate,
  or a claim name twice, and whose header names a member twice: 28000 from auth.verify and
  auth.authenticate.
* NULL in a required argument of any function of schema `auth` (enumerated from pg_catalog):
  22004, except a NULL token for auth.verify / auth.authenticate (28000, as documented); NULL
  in an argument that is optional by design (reason, expires_at, issuer) is accepted.
* A seeded, bounded random loop of hostile jsonb into is_revoked and import_jwks.

Admin functions (and is_revoked, which only admins may ask about any claims) run as
``key_admin``; verify / authenticate / sign_out as ``app_user``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import uuid

import psycopg
import pytest

from client_support import b64url, make_key, now, private_pem
from conftest import APP_USER, KEY_ADMIN, raises_sqlstate

KID = "hostile-k"
# Every SQLSTATE the README documents for the SQL functions (the Errors section).
DOCUMENTED = {"28000", "55000", "22023", "PT401", "42501", "22004", "25006"}

# Deeper than serde_json's recursion limit (128); jsonb stores it without complaint.
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000
DEEP_ARRAY_IN_OBJECT = '{"sub":"u","x":' + "[" * 1000 + "1" + "]" * 1000 + "}"


@pytest.fixture
def key(pg):
    k = make_key("HS256", KID)
    pg.sql("select auth.add_key(%s, 'HS256', %s)", [KID, k.secret_text], user=KEY_ADMIN)
    return k


@pytest.fixture
def admin(pg):
    return pg.connect(KEY_ADMIN)


@pytest.fixture
def app(pg):
    return pg.connect(APP_USER)


def raw_token(header: str, payload: str, secret: bytes) -> str:
    """A compact JWS from raw JSON texts, HMAC-SHA256-signed over exactly those bytes (JWT
    libraries refuse to produce duplicate names, lone surrogates or 1e400)."""
    h = b64url(header.encode())
    p = b64url(payload.encode())
    mac = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url(mac)}"


def sqlstate_of(conn, query: str, params=None) -> tuple[str | None, object]:
    """(sqlstate, None) when the statement raised, else (None, first column of its row). The
    connection must be in autocommit mode."""
    try:
        row = conn.execute(query, params).fetchone()
    except psycopg.Error as error:
        return error.sqlstate, f"{error.sqlstate} {error.diag.message_primary}"
    return None, row[0] if row else None


# == V5: jsonb that serde_json cannot represent ==============================================

UNREPRESENTABLE = {
    "sub 1e400": '{"sub": 1e400}',
    "negative 1e400": '{"sub": "u", "iat": -1e400}',
    "1e400 nested": '{"sub": "u", "meta": {"list": [1, 1e400]}}',
    "deep object": '{"sub": "u", "x": ' + DEEP_OBJECT + "}",
    "deep array in object": DEEP_ARRAY_IN_OBJECT,
    "deep object alone": DEEP_OBJECT,
}

UNREPRESENTABLE_JWKS = dict(UNREPRESENTABLE, **{
    "1e400 in a key": '{"keys": [{"kty": "RSA", "kid": "r", "n": 1e400, "e": "AQAB"}]}',
    "deep keys": '{"keys": [' + DEEP_OBJECT + "]}",
})


@pytest.mark.parametrize("text", UNREPRESENTABLE.values(), ids=UNREPRESENTABLE.keys())
def test_is_revoked_with_unrepresentable_jsonb_raises_22023(pg, admin, text):
    """V5: auth.is_revoked given jsonb that PostgreSQL stores but serde_json cannot read (a
    1e400 number, nesting past 128 levels) aborted with XX000 (pgrx's JsonB conversion
    panicked). It must be an invalid parameter: 22023."""
    assert admin.execute("select %s::jsonb is not null", [text]).fetchone()[0]
    with raises_sqlstate("22023"):
        admin.execute("select auth.is_revoked(%s::jsonb)", [text])
    # The connection is intact.
    assert admin.execute("select auth.is_revoked('{\"sub\": \"u\"}')").fetchone()[0] is False


@pytest.mark.parametrize("text", UNREPRESENTABLE_JWKS.values(), ids=UNREPRESENTABLE_JWKS.keys())
def test_import_jwks_with_unrepresentable_jsonb_raises_22023(pg, admin, text):
    """V5: auth.import_jwks given the same kind of jsonb aborted with XX000. It must be
    22023 (an unusable JWKS), and no key may be stored."""
    assert admin.execute("select %s::jsonb is not null", [text]).fetchone()[0]
    with raises_sqlstate("22023"):
        admin.execute("select auth.import_jwks(%s::jsonb)", [text])
    assert admin.execute("select count(*) from auth.keys").fetchone()[0] == 0


# == tokens whose signed payload or header is hostile ========================================


def _hostile_payloads() -> dict[str, str]:
    exp = now() + 600
    deep = "[" * 250 + "1" + "]" * 250
    deep_obj = '{"a":' * 250 + "1" + "}" * 250
    return {
        "number 1e400": '{"sub":"u","exp":%d,"n":1e400}' % exp,
        "exp 1e400": '{"sub":"u","exp":1e400}',
        "nesting 250 arrays": '{"sub":"u","exp":%d,"n":%s}' % (exp, deep),
        "nesting 250 objects": '{"sub":"u","exp":%d,"n":%s}' % (exp, deep_obj),
        "NUL in a value": '{"sub":"a\\u0000b","exp":%d}' % exp,
        "NUL in a nested name": '{"sub":"u","exp":%d,"m":{"k\\u0000":1}}' % exp,
        "lone high surrogate": '{"sub":"\\ud800","exp":%d}' % exp,
        "lone low surrogate": '{"sub":"u","exp":%d,"n":"x\\udc00y"}' % exp,
        "high surrogate then text": '{"sub":"u","exp":%d,"n":"\\ud800\\u0041"}' % exp,
        "duplicate sub": '{"sub":"a","sub":"b","exp":%d}' % exp,
        "duplicate exp (expired, then valid)": '{"sub":"a","exp":1,"exp":%d}' % exp,
    }


def _hostile_headers() -> dict[str, str]:
    return {
        "alg none then HS256": '{"alg":"none","alg":"HS256","kid":"%s"}' % KID,
        "alg HS256 twice": '{"alg":"HS256","alg":"HS256","kid":"%s"}' % KID,
        "kid twice": '{"alg":"HS256","kid":"nope","kid":"%s"}' % KID,
    }


def _hostile_tokens(key) -> dict[str, str]:
    header = '{"alg":"HS256","typ":"JWT","kid":"%s"}' % KID
    tokens = {f"payload: {name}": raw_token(header, payload, key.private)
              for name, payload in _hostile_payloads().items()}
    good_payload = json.dumps({"sub": "u", "exp": now() + 600}, separators=(",", ":"))
    tokens.update({f"header: {name}": raw_token(h, good_payload, key.private)
                   for name, h in _hostile_headers().items()})
    return tokens


HOSTILE_TOKEN_NAMES = [f"payload: {n}" for n in _hostile_payloads()] + [
    f"header: {n}" for n in _hostile_headers()]


@pytest.mark.parametrize("name", HOSTILE_TOKEN_NAMES)
@pytest.mark.parametrize("function", ["verify", "authenticate"])
def test_hostile_signed_token_is_28000(pg, key, app, function, name):
    """A correctly signed token whose payload holds 1e400, nesting past serde's limit,
    \\u0000, a lone surrogate or a duplicate claim name, or whose header names a member
    twice (`{"alg":"none","alg":"HS256"}`: parsers disagree on which wins), is refused as a
    token - 28000 `invalid token: ...` - by auth.verify and auth.authenticate alike, never
    XX000 / 22P05 and never accepted; authenticate binds nothing. (A control token made
    the same way with an ordinary header and payload verifies first, so the 28000 is the
    hostile part's doing, not a signing mistake.)"""
    control = raw_token('{"alg":"HS256","typ":"JWT","kid":"%s"}' % KID,
                        '{"sub":"u","exp":%d}' % (now() + 600), key.private)
    assert app.execute("select auth.verify(%s)", [control]).fetchone()[0]["sub"] == "u"
    token = _hostile_tokens(key)[name]
    app.execute("begin")
    with raises_sqlstate("28000") as caught:
        app.execute(f"select auth.{function}(%s)", [token])
    assert caught.message.startswith("invalid token: "), caught.message
    app.execute("rollback")
    assert app.execute("select auth.jwt(), auth.user_id()").fetchone() == (None, None)


# == V6: NULL arguments =======================================================================

# Arguments that are optional by design: NULL is accepted.
OPTIONAL_ARGS = {"reason", "expires_at", "issuer"}
# ... and those optional in one function only (a sign-in's device details, a kid chosen for
# an imported key, a step-up's methods and explicit session).
OPTIONAL_IN = {("create_session", "user_agent"), ("create_session", "ip"),
               ("create_session", "amr"), ("create_session", "tag"),
               ("create_session", "not_after"), ("refresh_session", "user_agent"),
               ("refresh_session", "ip"), ("import_signing_key", "kid"),
               ("update_session_aal", "amr")}
# A NULL credential is a rejected credential (28000), as a NULL token is for verify; a NULL
# session for a step-up means the bound identity's, and there is none here (28000).
NULL_CREDENTIAL = {("verify", "token"), ("authenticate", "token"),
                   ("refresh_session", "refresh_token"), ("update_session_aal", "session_id")}
# Functions that sign: a signing key is generated first (in the rolled-back transaction).
SIGNING = {"sign", "create_session", "refresh_session", "update_session_aal"}

ED_KEY = make_key("EdDSA", "null-jwks-k")


def _sample_values(kid_suffix: str) -> dict[tuple[str, str], str]:
    """A valid SQL literal for each (function, argument) of schema auth, so that a call with
    NULL in one argument has valid values in all others."""
    hs = make_key("HS256", "null-add-k")
    jwks = json.dumps({"keys": [dict(ED_KEY.public_jwk, kid="null-jwks-" + kid_suffix)]})
    return {
        ("add_key", "kid"): "null-add-" + kid_suffix,
        ("add_key", "alg"): "HS256",
        ("add_key", "key"): hs.secret_text,
        ("add_key", "issuer"): "https://issuer.example",
        ("import_jwks", "jwks"): jwks,
        ("import_jwks", "issuer"): "https://issuer.example",
        ("is_revoked", "claims"): json.dumps({"sub": "somebody", "iat": now()}),
        ("retire_key", "kid"): "no-such-key",
        ("revoke_session", "session_id"): str(uuid.uuid4()),
        ("revoke_session", "reason"): "null test",
        ("revoke_user", "user_id"): str(uuid.uuid4()),
        ("revoke_user", "reason"): "null test",
        ("revoke_user", "issuer"): "https://issuer.example",
        ("revoke_token", "jti"): "jti-" + kid_suffix,
        ("revoke_token", "expires_at"): "2099-01-01 00:00:00+00",
        ("sign_out", "scope"): "local",
        ("verify", "token"): None,          # filled with a valid token at run time
        ("authenticate", "token"): None,
        ("generate_key", "alg"): "ES256",
        ("import_signing_key", "private_key"): private_pem(make_key("ES256", "null-import")),
        ("import_signing_key", "alg"): "ES256",
        ("import_signing_key", "kid"): "null-import-" + kid_suffix,
        ("sign", "claims"): json.dumps({"sub": "somebody"}),
        ("sign", "expires_in"): "1 hour",
        ("create_session", "user_id"): "null-user-" + kid_suffix,
        ("create_session", "claims"): json.dumps({"email": "a@example.com"}),
        ("create_session", "user_agent"): "null-agent",
        ("create_session", "ip"): "192.0.2.1",
        ("create_session", "aal"): "aal1",
        ("create_session", "amr"): json.dumps([{"method": "password", "timestamp": now()}]),
        ("create_session", "tag"): "null-tag",
        ("create_session", "not_after"): "2099-01-01 00:00:00+00",
        ("refresh_session", "refresh_token"): None,   # a session's, made at run time
        ("refresh_session", "user_agent"): "null-agent",
        ("refresh_session", "ip"): "192.0.2.1",
        ("update_session_aal", "aal"): "aal2",
        ("update_session_aal", "amr"): json.dumps([{"method": "totp", "timestamp": now()}]),
        ("update_session_aal", "session_id"): None,   # a session's, made at run time
        ("list_sessions", "user_id"): "null-user-" + kid_suffix,
        ("end_session", "session_id"): str(uuid.uuid4()),
        ("purge_sessions", "older_than"): "1 day",
    }


# Who calls what: the role that may use the function.
AS_APP = {"verify", "authenticate", "sign_out"}
WITH_IDENTITY = {"sign_out"}


def _auth_functions(conn) -> list[tuple[str, str, list[str], list[str]]]:
    """(name, signature, argument names, argument types) of every function of schema auth
    that takes arguments, trigger and planner-support functions excepted."""
    rows = conn.execute("""
        select p.proname::text, p.oid::regprocedure::text, p.proargnames::text[],
               array(select pg_catalog.format_type(t, null)
                     from unnest(p.proargtypes) with ordinality as a(t, i) order by i)
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'auth' and p.pronargs > 0
          and p.prorettype <> 'trigger'::regtype
          and not ('internal'::regtype = any (p.proargtypes::oid[]))
        order by 2""").fetchall()
    # proargnames also names a RETURNS TABLE's columns, after the arguments.
    return [(name, sig, list(names or [])[:len(types)], list(types))
            for name, sig, names, types in rows]


def _call_with_null(pg, key, name, sig, arg_names, arg_types, null_index, n) -> tuple:
    """Calls `name` with NULL in argument `null_index` and sample values elsewhere, as the
    role that may use it, in a transaction that is rolled back. (sqlstate or None, value)."""
    samples = _sample_values(f"{n}")
    token = key.sign({"sub": str(uuid.uuid4()), "session_id": str(uuid.uuid4()),
                      "jti": f"null-{n}", "iat": now(), "exp": now() + 600})
    conn = pg.connect(APP_USER if name in AS_APP else KEY_ADMIN)
    conn.execute("begin")
    if name in SIGNING:
        conn.execute("select auth.generate_key('HS256')")
        refresh_token, session_id = conn.execute(
            "select refresh_token, session_id::text from auth.create_session('null-session')"
        ).fetchone()
        samples[("refresh_session", "refresh_token")] = refresh_token
        samples[("update_session_aal", "session_id")] = session_id
    params, parts = [], []
    for i, (arg, typ) in enumerate(zip(arg_names, arg_types)):
        if i == null_index:
            parts.append(f"NULL::{typ}")
            continue
        value = token if name in ("verify", "authenticate") else samples.get((name, arg))
        if value is None:
            conn.execute("rollback")
            return "unclassified", f"no sample value for {sig} argument {arg}"
        parts.append(f"%s::{typ}")
        params.append(value)
    try:
        if name in WITH_IDENTITY:
            conn.execute("select auth.authenticate(%s)", [token])
        return sqlstate_of(conn, f"select auth.{name}({', '.join(parts)})", params)
    finally:
        conn.execute("rollback")
        conn.close()


def test_null_in_any_required_argument_of_any_function(pg, key):
    """V6 across the API: for every function of schema auth (from pg_proc), a NULL in a
    required argument raises 22004 null_value_not_allowed - STRICT functions used to return
    NULL or silently do nothing (sign_out(NULL) signed nobody out, add_key with a NULL
    argument stored nothing and said nothing). Exceptions: a NULL token for auth.verify /
    auth.authenticate is 28000 (documented), and NULL in an argument optional by design
    (reason, expires_at, issuer) is accepted. A function or argument this test does not know
    fails it, so new API surface gets a case."""
    functions = _auth_functions(pg.connect())
    names = {f[0] for f in functions}
    assert {"add_key", "import_jwks", "is_revoked", "retire_key", "revoke_session",
            "revoke_user", "revoke_token", "sign_out", "verify", "authenticate"} <= names, names
    wrong, n = [], 0
    for name, sig, arg_names, arg_types in functions:
        for i, arg in enumerate(arg_names):
            n += 1
            state, value = _call_with_null(pg, key, name, sig, arg_names, arg_types, i, n)
            if state == "unclassified":
                wrong.append(value)
                continue
            if arg in OPTIONAL_ARGS or (name, arg) in OPTIONAL_IN:
                expected = "accepted"
                got = "accepted" if state is None else value
            else:
                expected = "28000" if (name, arg) in NULL_CREDENTIAL else "22004"
                got = state if state is not None else f"no error (returned {value!r})"
            if got != expected:
                wrong.append(f"{sig} with {arg} NULL: expected {expected}, got {got}")
    assert not wrong, "\n".join(wrong)


def _authenticated_app(pg, key):
    conn = pg.connect(APP_USER)
    conn.execute("begin")
    conn.execute("select auth.authenticate(%s)", [key.sign(
        {"sub": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "jti": "j-null",
         "iat": now(), "exp": now() + 600})])
    return conn


def test_sign_out_null_scope_raises_22004(pg, key):
    """V6: auth.sign_out(NULL) was STRICT and silently did nothing - the caller believed it
    had signed out. A NULL scope must raise 22004, and revoke nothing."""
    count = ("select (select count(*) from auth.revoked_sessions) + "
             "(select count(*) from auth.revoked_users) + "
             "(select count(*) from auth.revoked_tokens)")
    before = pg.sql(count)[0][0]
    for statement in ("select auth.sign_out(NULL)", "select auth.sign_out(NULL::text)"):
        conn = _authenticated_app(pg, key)
        with raises_sqlstate("22004"):
            conn.execute(statement)
        conn.execute("rollback")
    assert pg.sql(count)[0][0] == before


SECRET = "s" * 40
NULL_CALLS = {
    "is_revoked(NULL)": "select auth.is_revoked(NULL)",
    "import_jwks(NULL)": "select auth.import_jwks(NULL)",
    "add_key(NULL kid)": f"select auth.add_key(NULL, 'HS256', '{SECRET}')",
    "add_key(NULL alg)": f"select auth.add_key('k-null', NULL, '{SECRET}')",
    "add_key(NULL key)": "select auth.add_key('k-null', 'HS256', NULL)",
    "retire_key(NULL)": "select auth.retire_key(NULL)",
    "revoke_session(NULL)": "select auth.revoke_session(NULL)",
    "revoke_user(NULL::text)": "select auth.revoke_user(NULL::text)",
    "revoke_user(NULL::uuid)": "select auth.revoke_user(NULL::uuid)",
    "revoke_token(NULL)": "select auth.revoke_token(NULL)",
}


@pytest.mark.parametrize("statement", NULL_CALLS.values(), ids=NULL_CALLS.keys())
def test_null_required_argument_raises_22004(pg, admin, statement):
    """V6, case by case, as key_admin (who may call all of these): a NULL in a required
    argument raises 22004 - never a NULL result, `false`, or a silent no-op - and stores
    nothing."""
    with raises_sqlstate("22004"):
        admin.execute(statement)
    assert admin.execute("select count(*) from auth.keys").fetchone()[0] == 0


def test_null_token_is_28000_and_optional_arguments_accept_null(pg, key, admin, app):
    """The documented exceptions to V6: a NULL token is a rejected token (28000) for
    auth.verify and auth.authenticate; reason and expires_at may be NULL."""
    for function in ("verify", "authenticate"):
        with raises_sqlstate("28000"):
            app.execute(f"select auth.{function}(NULL)")
    assert admin.execute("select auth.revoke_session(%s, NULL)",
                         [str(uuid.uuid4())]).fetchone()[0] is True
    admin.execute("select auth.revoke_user('somebody-null', NULL)")
    admin.execute("select auth.revoke_user(%s::uuid, NULL)", [str(uuid.uuid4())])
    assert admin.execute("select auth.revoke_token('jti-null-ok', NULL)").fetchone()[0] is True


# == randomized hostile jsonb ==================================================================


class Raw(str):
    """A JSON fragment emitted verbatim (numbers Python's json cannot write)."""


NUMBERS = ["0", "-0", "1", "-1", "1.5", "1e308", "-1e308", "1e400", "-1e400", "1e-400",
           "123456789012345678901234567890", "9" * 500, "0.000000000000000000001",
           "1E+400", "2e-5", "18446744073709551616"]
STRINGS = ["", "x", "sub", "é", "日本", "\U0001F600", "a" * 300, "AQAB", "RSA", "EC", "OKP",
           "oct", "P-256", "P-384", "Ed25519", "sig", "enc", "verify", "RS256", "ES256",
           "none", "HS256", "\\", "\"", "\n", "\u2028", "{", "[1]"]
NAMES = ["keys", "kty", "kid", "alg", "use", "key_ops", "n", "e", "x", "y", "crv", "k", "d",
         "sub", "iat", "exp", "session_id", "sid", "jti", "role", "", "é", "a" * 100]


def _rand_value(rng: random.Random, depth: int) -> object:
    r = rng.random()
    if depth > 4 or r < 0.35:
        kind = rng.randrange(6)
        if kind == 0:
            return Raw(rng.choice(NUMBERS))
        if kind == 1:
            return rng.choice(STRINGS)
        if kind == 2:
            return str(uuid.UUID(int=rng.getrandbits(128)))
        if kind == 3:
            return rng.choice([True, False, None])
        if kind == 4:
            return rng.randrange(-2**70, 2**70)
        return "".join(chr(rng.choice([rng.randrange(0x20, 0x7f), rng.randrange(0xa0, 0xd7ff),
                                       rng.randrange(0xe000, 0x10ffff)]))
                       for _ in range(rng.randrange(20)))
    if r < 0.45:
        levels = rng.choice([129, 200, 500, 1000])
        open_, close = rng.choice([("[", "]"), ('{"a":', "}")])
        return Raw(open_ * levels + rng.choice(NUMBERS) + close * levels)
    if r < 0.7:
        return [_rand_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {rng.choice(NAMES): _rand_value(rng, depth + 1) for _ in range(rng.randrange(7))}


def _dump(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _rand_document(rng: random.Random, jwks: bool) -> str:
    if jwks and rng.random() < 0.6:
        keys = [_rand_value(rng, 2) if rng.random() < 0.3 else
                {name: _rand_value(rng, 3) for name in
                 rng.sample(["kty", "kid", "alg", "use", "n", "e", "x", "y", "crv", "k",
                             "key_ops"], rng.randrange(1, 7))}
                for _ in range(rng.randrange(4))]
        return _dump({"keys": keys, **({"x": _rand_value(rng, 1)} if rng.random() < 0.3 else {})})
    return _dump(_rand_value(rng, 0))


@pytest.mark.parametrize("function", ["is_revoked", "import_jwks"])
def test_random_hostile_jsonb_gets_only_documented_sqlstates(pg, admin, function):
    """A seeded, bounded loop of hostile jsonb (huge and tiny numbers, deep nesting, odd
    strings and names, JWKS-shaped documents) into auth.is_revoked / auth.import_jwks as
    key_admin: every call either answers (a non-NULL result) or raises a SQLSTATE of the
    README's table - never XX000."""
    rng = random.Random(0x5E55 + len(function))
    outcomes: dict[str, int] = {}
    unexpected = []
    tried = 0
    for _ in range(400):
        text = _rand_document(rng, jwks=function == "import_jwks")
        state, _ = sqlstate_of(admin, "select %s::jsonb is not null", [text])
        if state is not None:
            continue            # PostgreSQL's own jsonb input refused it: not our function's
        tried += 1
        state, value = sqlstate_of(admin, f"select auth.{function}(%s::jsonb)", [text])
        key = "ok" if state is None else state
        outcomes[key] = outcomes.get(key, 0) + 1
        if state is None and value is None:
            unexpected.append((text[:150], "returned NULL"))
        elif state is not None and (state not in DOCUMENTED or state == "XX000"):
            unexpected.append((text[:150], value))
    assert tried >= 300, tried
    assert not unexpected, (outcomes, unexpected[:8])
    assert outcomes.get("22023", 0) > 0, outcomes
    # Still usable afterwards.
    assert admin.execute("select auth.is_revoked('{\"sub\":\"u\"}')").fetchone()[0] is False
