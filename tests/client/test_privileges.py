"""Privileges, as non-superusers: who may read or change the keyring and the settings, what
a plain role can learn from auth.jwks() and from error texts, and the placeholder attack
(setting pg_session_auth.* before the library is loaded in the backend)."""

from __future__ import annotations

import json

import psycopg
import pytest

from client_support import (
    ALL_ALGS,
    HMAC_ALGS,
    b64url,
    claims,
    hmac_token,
    invalid,
    make_key,
    now,
    private_pem,
)
from conftest import APP_USER, KEY_ADMIN, collect_notices, raises_sqlstate, running_cluster

SETTINGS = {
    "pg_session_auth.leeway": "3600",
    "pg_session_auth.issuer": "https://evil.example",
    "pg_session_auth.audience": "evil",
    "pg_session_auth.max_token_bytes": "1048576",
}
PUBLIC_JWK_MEMBERS = {"kty", "crv", "n", "e", "x", "y", "alg", "use", "kid"}
PRIVATE_JWK_MEMBERS = {"k", "d", "p", "q", "dp", "dq", "qi", "oth"}


@pytest.fixture(scope="module")
def keys():
    return {alg: make_key(alg, kid=f"{alg}-k") for alg in ALL_ALGS}


notices_of = collect_notices


def verify(conn, token):
    return conn.execute("select auth.verify(%s)", [token]).fetchone()[0]


def add_all_keys(conn, keys):
    for alg, key in keys.items():
        form = "secret" if alg in HMAC_ALGS else "pem"
        conn.execute("select auth.add_key(%s, %s, %s)", [key.kid, alg, key.key_text(form)])


# -- the keyring -----------------------------------------------------------------------------


def test_plain_role_cannot_read_or_write_the_keyring(pg, keys):
    pg.connect().execute("select auth.add_key(%s, 'HS256', %s)",
                         ["HS256-k", keys["HS256"].secret_text])
    app = pg.connect(APP_USER)
    for statement in (
        "select * from auth.keys",
        "select secret from auth.keys",
        "select count(*) from auth.keys",
        "insert into auth.keys (kid, alg, secret) values ('x', 'HS256', '\\x00')",
        "update auth.keys set retired_at = null",
        "delete from auth.keys",
        "truncate auth.keys",
    ):
        with raises_sqlstate("42501"):
            app.execute(statement)


def test_plain_role_cannot_manage_keys(pg, keys):
    app = pg.connect(APP_USER)
    hs = keys["HS256"]
    rs = keys["RS256"]
    with raises_sqlstate("42501"):
        app.execute("select auth.add_key(%s, 'HS256', %s)", ["mine", hs.secret_text])
    with raises_sqlstate("42501"):
        app.execute("select auth.add_key(%s, 'RS256', %s)", ["mine", rs.public_pem])
    jwks = {"keys": [dict(rs.public_jwk, kid="mine", alg="RS256")]}
    with raises_sqlstate("42501"):
        app.execute("select auth.import_jwks(%s::jsonb)", [json.dumps(jwks)])
    with raises_sqlstate("42501"):
        app.execute("select auth.retire_key('HS256-k')")
    with raises_sqlstate("42501"):
        app.execute("select auth.invalidate_cached_state()")
    # Nor can it attach the extension's trigger function to a table of its own.
    app.execute("create temporary table mine (x int)")
    with raises_sqlstate("42501"):
        app.execute("create trigger t after insert on mine for each statement "
                    "execute function auth.invalidate_cached_state()")
    # Nothing was stored.
    assert pg.sql("select count(*) from auth.keys")[0][0] == 0


def test_plain_role_can_verify_and_read_jwks(pg, keys):
    add_all_keys(pg.connect(KEY_ADMIN), keys)
    app = pg.connect(APP_USER)
    for alg, key in keys.items():
        payload = claims()
        assert verify(app, key.sign(payload)) == payload
    jwks = app.execute("select auth.jwks()").fetchone()[0]
    assert sorted(k["kid"] for k in jwks["keys"]) == sorted(
        key.kid for alg, key in keys.items() if alg not in HMAC_ALGS)


def test_jwks_never_contains_secrets_or_private_members(pg, keys):
    admin = pg.connect(KEY_ADMIN)
    add_all_keys(admin, keys)
    # HMAC keys given as JWKs, too; and asymmetric JWKs with extra (public) members.
    for alg in HMAC_ALGS:
        admin.execute("select auth.add_key(%s, %s, %s)",
                      [f"{alg}-jwk", alg, keys[alg].key_text("jwk")])
    for alg in ("RS256", "ES256", "EdDSA"):
        jwk = dict(keys[alg].public_jwk, kid="x", ext=True, key_ops=["verify"],
                   x5t="abc", comment="hello")
        admin.execute("select auth.add_key(%s, %s, %s)", [f"{alg}-extra", alg, json.dumps(jwk)])
    # A JWKS with a symmetric key: skipped, never stored, never published.
    oct_jwks = {"keys": [{"kty": "oct", "kid": "oct-in-jwks", "alg": "HS256",
                          "k": b64url(keys["HS256"].private)}]}
    assert admin.execute("select auth.import_jwks(%s::jsonb)",
                         [json.dumps(oct_jwks)]).fetchone()[0] == 0

    app = pg.connect(APP_USER)
    text = app.execute("select auth.jwks()::text").fetchone()[0]
    jwks = json.loads(text)
    assert len(jwks["keys"]) == 9 + 3
    for entry in jwks["keys"]:
        assert set(entry) <= PUBLIC_JWK_MEMBERS, entry
        assert not set(entry) & PRIVATE_JWK_MEMBERS, entry
        assert entry["use"] == "sig"
    for alg in HMAC_ALGS:
        secret = keys[alg].private
        assert secret.decode() not in text
        assert b64url(secret) not in text
    assert "oct-in-jwks" not in text
    assert '"k"' not in text


def test_private_key_material_is_refused(pg, keys):
    admin = pg.connect(KEY_ADMIN)
    for alg in ("RS256", "ES256", "ES384", "EdDSA"):
        with raises_sqlstate("22023"):
            admin.execute("select auth.add_key('p', %s, %s)", [alg, private_pem(keys[alg])])
    rs = keys["RS256"]
    import jwt.algorithms

    private_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(rs.private, as_dict=True)
    private_jwk.pop("key_ops", None)  # PyJWT says ["sign"]; the private members must suffice
    with raises_sqlstate("22023") as caught:
        admin.execute("select auth.add_key('p', 'RS256', %s)", [json.dumps(private_jwk)])
    assert "private" in caught.message
    notices = notices_of(admin)
    jwks = {"keys": [dict(private_jwk, kid="p")]}
    assert admin.execute("select auth.import_jwks(%s::jsonb)",
                         [json.dumps(jwks)]).fetchone()[0] == 0
    assert len(notices) == 1 and "private" in notices[0].message_primary
    assert pg.sql("select count(*) from auth.keys")[0][0] == 0


def test_key_admin_can_add_import_and_retire_keys(pg, keys):
    admin = pg.connect(KEY_ADMIN)
    app = pg.connect(APP_USER)
    hs, rs, es, ed = keys["HS256"], keys["RS256"], keys["ES256"], keys["EdDSA"]
    admin.execute("select auth.add_key(%s, 'HS256', %s)", [hs.kid, hs.secret_text])
    jwks = {"keys": [dict(rs.public_jwk, kid=rs.kid, alg="RS256"),
                     dict(es.public_jwk, kid=es.kid), dict(ed.public_jwk, kid=ed.kid)]}
    assert admin.execute("select auth.import_jwks(%s::jsonb)",
                         [json.dumps(jwks)]).fetchone()[0] == 3
    # session_auth_admin may read the keyring.
    rows = admin.execute("select kid, alg, retired_at is null from auth.keys order by kid").fetchall()
    assert rows == sorted([(hs.kid, "HS256", True), (rs.kid, "RS256", True),
                           (es.kid, "ES256", True), (ed.kid, "EdDSA", True)])
    for key in (hs, rs, es, ed):
        payload = claims()
        assert verify(app, key.sign(payload)) == payload
    assert admin.execute("select auth.retire_key(%s)", [rs.kid]).fetchone()[0] is True
    assert admin.execute("select auth.retire_key(%s)", [rs.kid]).fetchone()[0] is False
    assert admin.execute("select auth.retire_key('no such kid')").fetchone()[0] is False
    with raises_sqlstate("28000", invalid("retired key")):
        verify(app, rs.sign(claims()))
    # A retired key leaves the published set; replacing it makes it active again.
    assert rs.kid not in {k["kid"] for k in app.execute("select auth.jwks()").fetchone()[0]["keys"]}
    admin.execute("select auth.add_key(%s, 'RS256', %s)", [rs.kid, rs.public_pem])
    payload = claims()
    assert verify(app, rs.sign(payload)) == payload
    # But key_admin is no superuser: it cannot change the trusted settings either.
    with raises_sqlstate("42501"):
        admin.execute("set pg_session_auth.leeway = 3600")


# -- the settings ----------------------------------------------------------------------------


@pytest.mark.parametrize("name,value", [
    ("pg_session_auth.leeway", "99999"),
    ("pg_session_auth.leeway", "3600"),
    ("pg_session_auth.leeway", "0"),
    ("pg_session_auth.issuer", "x"),
    ("pg_session_auth.audience", "x"),
    ("pg_session_auth.max_token_bytes", "1048576"),
])
def test_plain_role_cannot_change_settings(pg, name, value):
    app = pg.connect(APP_USER)
    message = f'permission denied to set parameter "{name}"'
    with raises_sqlstate("42501", message):
        app.execute(f"set {name} = '{value}'")
    with raises_sqlstate("42501", message):
        app.execute(f"set session {name} = '{value}'")
    with raises_sqlstate("42501", message):
        app.execute("select set_config(%s, %s, false)", [name, value])
    with raises_sqlstate("42501", message):
        app.execute("select set_config(%s, %s, true)", [name, value])
    with app.transaction():
        with raises_sqlstate("42501", message):
            with app.transaction():
                app.execute(f"set local {name} = '{value}'")
    with raises_sqlstate("42501", message):
        app.execute(f"reset {name}")
    with raises_sqlstate("42501", message):
        app.execute(f"alter role current_user set {name} = '{value}'")
    with raises_sqlstate("42501", message):
        app.execute(f"alter role current_user in database postgres set {name} = '{value}'")
    with raises_sqlstate("42501"):
        app.execute(f"alter database postgres set {name} = '{value}'")
    # Nothing changed.
    defaults = {"pg_session_auth.leeway": "30s", "pg_session_auth.issuer": "",
                "pg_session_auth.audience": "", "pg_session_auth.max_token_bytes": "8kB"}
    assert app.execute(f"show {name}").fetchone()[0] == defaults[name]
    assert pg.sql("select count(*) from pg_db_role_setting")[0][0] == 0


def test_request_roles_cannot_read_the_trust_settings(pg):
    """Without pg_read_all_settings a role cannot even read what decides trust."""
    pg.sql("create role no_settings_reader login")
    try:
        with pg.connect("no_settings_reader") as reader:
            for name in ("leeway", "issuer", "audience", "max_token_bytes", "max_token_lifetime",
                         "claims_source", "role_claim", "allowed_roles", "claims"):
                with raises_sqlstate("42501"):
                    reader.execute(f"show pg_session_auth.{name}")
                with raises_sqlstate("42501"):
                    reader.execute(f"select current_setting('pg_session_auth.{name}')")
            visible = reader.execute(
                "select count(*) from pg_settings where name like 'pg_session_auth.%'").fetchone()[0]
            assert visible == 0
    finally:
        pg.close_connections()
        pg.sql("drop role no_settings_reader")


EVIL_STARTUP_OPTIONS = "-c pg_session_auth.leeway=3600 -c pg_session_auth.issuer=evil"


def test_plain_role_cannot_set_at_connection_start(pg):
    """Startup options (PGOPTIONS) of a non-superuser, with the library in
    shared_preload_libraries: the settings exist before the options are applied, so the
    connection itself is refused."""
    with pytest.raises(psycopg.OperationalError,
                       match='permission denied to set parameter "pg_session_auth.leeway"'):
        pg.connect(APP_USER, options=EVIL_STARTUP_OPTIONS)


def test_plain_role_cannot_set_at_connection_start_with_session_preload():
    """The same with session_preload_libraries: the library loads after the options were
    applied as placeholders; loading it refuses them (a WARNING) and the defaults stay."""
    with running_cluster(preload="session") as c:
        app = c.connect(APP_USER, options=EVIL_STARTUP_OPTIONS)
        assert app.execute("show pg_session_auth.leeway").fetchone()[0] == "30s"
        assert app.execute("show pg_session_auth.issuer").fetchone()[0] == ""


def test_superuser_settings_survive_reset_all_of_a_plain_role(pg, keys):
    hs = keys["HS256"]
    su = pg.connect()
    su.execute("select auth.add_key(%s, 'HS256', %s)", [hs.kid, hs.secret_text])
    su.execute("alter role app_user set pg_session_auth.leeway = 0")
    su.execute("alter database postgres set pg_session_auth.issuer = 'https://issuer.example'")
    su.execute("alter database postgres set pg_session_auth.audience = 'api'")
    su.execute("alter role app_user in database postgres set pg_session_auth.max_token_bytes = 4096")

    app = pg.connect(APP_USER)
    expected = {"leeway": "0", "issuer": "https://issuer.example", "audience": "api",
                "max_token_bytes": "4kB"}

    def current():
        return {name: app.execute(f"show pg_session_auth.{name}").fetchone()[0]
                for name in expected}

    assert current() == expected
    app.execute("reset all")
    assert current() == expected
    app.execute("discard all")
    assert current() == expected
    with raises_sqlstate("42501"):
        app.execute("reset pg_session_auth.leeway")
    assert current() == expected

    # And they are in force: leeway 0, the issuer and the audience.
    good = claims(iss="https://issuer.example", aud="api")
    assert verify(app, hs.sign(good)) == good
    with raises_sqlstate("28000", invalid("expired")):
        verify(app, hs.sign(claims(iss="https://issuer.example", aud="api", exp=now() - 2)))
    with raises_sqlstate("28000", invalid("wrong issuer")):
        verify(app, hs.sign(claims(iss="https://other.example", aud="api")))
    with raises_sqlstate("28000", invalid("wrong audience")):
        verify(app, hs.sign(claims(iss="https://issuer.example", aud="web")))


def test_superuser_session_setting_survives_reset_all_after_set_role(pg, keys):
    """A pooler pattern: the superuser sets the rules, then SET ROLE to the application's
    role; that role's RESET ALL keeps the rules (GUC_NO_RESET_ALL)."""
    hs = keys["HS256"]
    su = pg.connect()
    su.execute("select auth.add_key(%s, 'HS256', %s)", [hs.kid, hs.secret_text])
    su.execute("set pg_session_auth.issuer = 'https://issuer.example'")
    su.execute("set pg_session_auth.leeway = 0")
    su.execute("set role app_user")
    su.execute("reset all")
    assert su.execute("show pg_session_auth.issuer").fetchone()[0] == "https://issuer.example"
    assert su.execute("show pg_session_auth.leeway").fetchone()[0] == "0"
    with raises_sqlstate("42501"):
        su.execute("set pg_session_auth.issuer = ''")
    with raises_sqlstate("28000", invalid("wrong issuer")):
        verify(su, hs.sign(claims(iss="https://other.example")))


# -- the placeholder attack ------------------------------------------------------------------


@pytest.fixture
def unloaded(cluster_without_preload):
    c = cluster_without_preload
    c.reset()
    yield c
    c.close_connections()


def test_placeholder_attack_before_the_library_is_loaded(unloaded, keys):
    """Without session_preload_libraries, `SET pg_session_auth.x` in a backend that has not
    loaded the library yet only creates a placeholder, which any role may do. What
    PostgreSQL 15 does (recorded here): the SET succeeds, SHOW echoes the placeholder, and
    when the library is loaded (at the first call of auth.verify) the placeholder is re-applied
    with the privileges of the role that set it; for these SUSET settings that fails with a
    WARNING 'permission denied to set parameter', and the built-in default stays in force."""
    hs = keys["HS256"]
    # Keys are added in another backend (that one loads the library, not app_user's).
    with unloaded.connect(KEY_ADMIN) as admin:
        admin.execute("select auth.add_key(%s, 'HS256', %s)", [hs.kid, hs.secret_text])

    app = unloaded.connect(APP_USER)
    received = notices_of(app)
    app.execute("set pg_session_auth.leeway = '99999'")
    app.execute("set pg_session_auth.issuer = 'https://evil.example'")
    app.execute("select set_config('pg_session_auth.audience', 'evil', false)")
    # Before loading, the placeholders echo the values (plain strings, no unit).
    assert app.execute("show pg_session_auth.leeway").fetchone()[0] == "99999"
    # auth.jwks() is a SQL function: it does not load the library.
    app.execute("select auth.jwks()")
    assert app.execute("show pg_session_auth.issuer").fetchone()[0] == "https://evil.example"
    assert received == []

    expired = hs.sign(claims(iss="https://real.example", aud="real", exp=now() - 1000))
    with raises_sqlstate("28000", invalid("expired")):
        verify(app, expired)
    warnings = sorted(n.message_primary for n in received if n.severity_nonlocalized == "WARNING")
    assert warnings == sorted(
        f'permission denied to set parameter "pg_session_auth.{name}"'
        for name in ("leeway", "issuer", "audience")
    ), [n.message_primary for n in received]
    assert app.execute("show pg_session_auth.leeway").fetchone()[0] == "30s"
    assert app.execute("show pg_session_auth.issuer").fetchone()[0] == ""
    assert app.execute("show pg_session_auth.audience").fetchone()[0] == ""
    # Neither issuer nor audience is enforced: a fresh token with other values passes.
    payload = claims(iss="https://real.example", aud="real")
    assert verify(app, hs.sign(payload)) == payload
    # And now that the library is loaded, the settings are SUSET as usual.
    with raises_sqlstate("42501"):
        app.execute("set pg_session_auth.leeway = '3600'")


@pytest.mark.parametrize("how", ["set", "set_config", "startup_option", "set_then_txn_rollback"])
def test_placeholder_attack_in_range_value(unloaded, keys, how):
    """The same with an in-range leeway (3600): refused for lack of privilege, not range."""
    hs = keys["HS256"]
    with unloaded.connect() as su:
        su.execute("select auth.add_key(%s, 'HS256', %s)", [hs.kid, hs.secret_text])
    if how == "startup_option":
        app = unloaded.connect(APP_USER, options="-c pg_session_auth.leeway=3600")
    else:
        app = unloaded.connect(APP_USER)
    received = notices_of(app)
    if how == "set" or how == "set_then_txn_rollback":
        app.execute("set pg_session_auth.leeway = '3600'")
    elif how == "set_config":
        app.execute("select set_config('pg_session_auth.leeway', '3600', false)")
    assert app.execute("show pg_session_auth.leeway").fetchone()[0] == "3600"
    expired = hs.sign(claims(exp=now() - 1000))
    if how == "set_then_txn_rollback":
        # The library gets loaded inside a transaction that is then rolled back.
        app.autocommit = False
        with raises_sqlstate("28000", invalid("expired")):
            verify(app, expired)
        app.rollback()
        app.autocommit = True
    with raises_sqlstate("28000", invalid("expired")):
        verify(app, expired)
    assert app.execute("show pg_session_auth.leeway").fetchone()[0] == "30s"
    assert any(n.message_primary == 'permission denied to set parameter "pg_session_auth.leeway"'
               for n in received)


def test_placeholder_alter_role_is_refused_without_the_library(unloaded):
    """PostgreSQL 15 refuses ALTER ROLE ... SET of a placeholder by a non-superuser."""
    app = unloaded.connect(APP_USER)
    with raises_sqlstate("42501"):
        app.execute("alter role current_user set pg_session_auth.leeway = 3600")
    with raises_sqlstate("42501"):
        app.execute("alter role current_user set pg_session_auth.issuer = 'evil'")
    assert unloaded.sql("select count(*) from pg_db_role_setting")[0][0] == 0


def test_superuser_alter_role_applies_without_preloading(unloaded, keys):
    """Control: settings a superuser stored per role do apply once the library loads."""
    hs = keys["HS256"]
    with unloaded.connect() as su:
        su.execute("select auth.add_key(%s, 'HS256', %s)", [hs.kid, hs.secret_text])
        su.execute("alter role app_user set pg_session_auth.leeway = 3600")
    app = unloaded.connect(APP_USER)
    payload = claims(exp=now() - 1000)
    assert verify(app, hs.sign(payload)) == payload
    assert app.execute("show pg_session_auth.leeway").fetchone()[0] == "1h"


# -- error texts -----------------------------------------------------------------------------


SECRET = "correct-horse-battery-staple-0123456789-abcdefghijklmnop"  # 55 bytes


def test_error_texts_never_contain_the_secret_or_the_token(pg):
    admin = pg.connect(KEY_ADMIN)
    admin.execute("select auth.add_key('known', 'HS256', %s)", [SECRET])
    admin.execute("select auth.add_key('other', 'HS384', %s)", [SECRET])
    app = pg.connect(APP_USER)
    secret = SECRET.encode()
    header = {"alg": "HS256", "typ": "JWT", "kid": "known"}
    token = hmac_token(header, claims(), secret)
    assert verify(app, token)  # the token itself is good
    h, p, s = token.split(".")
    forbidden = {SECRET, b64url(secret), token, f"{h}.{p}", s, p}

    def check(caught):
        for text in caught.texts():
            for needle in forbidden:
                assert needle not in text, (needle, text)

    def attempt(conn, sql, params, sqlstate):
        with raises_sqlstate(sqlstate) as caught:
            conn.execute(sql, params)
        check(caught)
        return caught

    cases = [
        f"{h}.{p}.{s[:-2]}AA",                                              # bad signature
        hmac_token(header, claims(exp=now() - 1000), secret),               # expired
        hmac_token(header, claims(nbf=now() + 1000), secret),               # not yet valid
        hmac_token(header, claims(iat=now() + 1000), secret),               # future iat
        hmac_token(header, {"sub": "x"}, secret),                           # missing claim
        hmac_token(header, claims(exp="never"), secret),                    # claim type
        hmac_token(header, b"not json", secret),                            # malformed payload
        hmac_token(dict(header, kid="nope"), claims(), secret),             # unknown key
        hmac_token(dict(header, kid=token), claims(), secret),              # kid = the token
        hmac_token(dict(header, alg="HS384"), claims(), secret, "sha384"),  # mismatch
        hmac_token(dict(header, alg="HS1"), claims(), secret),              # unsupported alg
        hmac_token(dict(header, jwk={"k": SECRET}), claims(), secret),      # forbidden header
        token + "." + s,                                                    # four parts
        token + "=",                                                        # padding
        token + "A" * 9000,                                                 # too large
        token.replace(".", "..", 1),                                        # empty part
        "{" + token,                                                        # junk
    ]
    for bad in cases:
        caught = attempt(app, "select auth.verify(%s)", [bad], "28000")
        assert caught.message.startswith("invalid token: ")
    # The kid of a token is quoted in some details, but cut short: a kid that is a whole
    # token does not come back whole.
    caught = attempt(app, "select auth.verify(%s)",
                     [hmac_token(dict(header, kid=token), claims(), secret)], "28000")
    assert caught.message == invalid("unknown key")

    admin.execute("select auth.retire_key('known')")
    attempt(app, "select auth.verify(%s)", [token], "28000")

    # Key management errors do not echo the key either.
    for alg, key in [("HS512", SECRET),                       # too short for HS512
                     ("RS256", SECRET),                       # not a PEM
                     ("ES256", "-----BEGIN PUBLIC KEY-----\n" + SECRET + "\n-----END PUBLIC KEY-----"),
                     ("HS256", "{" + SECRET),                 # looks like a JWK
                     ("HS256", json.dumps({"kty": "oct", "k": b64url(secret), "alg": "HS512"})),
                     ("HS256", json.dumps({"kty": "oct", "k": b64url(secret), "use": "enc"})),
                     ("HS256", json.dumps({"kty": "oct", "k": SECRET + "!"})),
                     ("none", SECRET)]:
        attempt(admin, "select auth.add_key('k2', %s, %s)", [alg, key], "22023")
    notices = notices_of(admin)
    admin.execute("select auth.import_jwks(%s::jsonb)", [json.dumps({"keys": [
        {"kty": "oct", "kid": "o", "k": b64url(secret)},
        {"kty": "oct", "kid": "o2", "alg": "HS256", "k": b64url(secret)},
        {"kty": "RSA", "kid": "r", "n": b64url(secret), "e": "AQAB"},
    ]})])
    assert len(notices) == 3
    for notice in notices:
        for text in (notice.message_primary, notice.message_detail, notice.message_hint):
            for needle in forbidden:
                assert not text or needle not in text
    # The server log has not recorded them either (parameters are not logged).
    log = pg.server_log()
    assert SECRET not in log
    assert token not in log


# -- code of a plain role never runs with the keyring owner's privileges ---------------------


def test_search_path_cannot_run_code_as_the_keyring_owner(pg, keys):
    """auth.verify reads auth.keys as the table's owner (a superuser, since the extension is
    superuser-only), but with the CALLER's search_path. A plain role that can create a
    function in any schema (here: a schema it owns, a common set-up) and puts that schema
    before pg_catalog must not get its function called in that read.

    EXPECTED TO FAIL while src/keyring.rs (load_keyring) calls the unqualified `encode(...)`
    in a query that src/spi_read.rs (select_as) runs as the owner without pinning
    search_path: the plain role's `encode(bytea, text)` runs as the superuser and can, e.g.,
    ALTER ROLE itself SUPERUSER."""
    hs = keys["HS256"]
    su = pg.connect()
    su.execute("select auth.add_key(%s, 'HS256', %s)", [hs.kid, hs.secret_text])
    su.execute("create schema attacker authorization app_user")
    try:
        app = pg.connect(APP_USER)
        app.execute("create table attacker.seen (who text, escalated boolean)")
        app.execute("""
            create function attacker.encode(bytea, text) returns text
            language plpgsql as $$
            declare
                escalated boolean := false;
            begin
                begin
                    execute 'alter role app_user superuser';
                    escalated := true;
                exception when others then
                    null;
                end;
                insert into attacker.seen values (current_user, escalated);
                return pg_catalog.encode($1, $2);
            end
            $$""")
        app.execute("set search_path = attacker, pg_catalog")
        payload = claims()
        # The first verification of this backend loads the keyring.
        assert verify(app, hs.sign(payload)) == payload
        seen = app.execute("select who, escalated from attacker.seen").fetchall()
        is_super = su.execute(
            "select rolsuper from pg_roles where rolname = 'app_user'").fetchone()[0]
        assert not is_super, f"app_user made itself superuser through auth.verify: {seen}"
        assert all(who == APP_USER for who, _ in seen), (
            f"a plain role's function ran as another role inside auth.verify: {seen}")
    finally:
        su.execute("alter role app_user nosuperuser")
        pg.close_connections()
        pg.sql("drop schema attacker cascade")


@pytest.mark.parametrize("preloaded", [True, False])
def test_function_set_clause_is_refused(request, preloaded):
    """CREATE FUNCTION ... SET pg_session_auth.x by a plain role is refused, whether or not
    the library is loaded in its backend (PostgreSQL 15 checks placeholders too)."""
    c = request.getfixturevalue("pg" if preloaded else "unloaded")
    app = c.connect(APP_USER)
    for name, value in SETTINGS.items():
        with raises_sqlstate("42501", f'permission denied to set parameter "{name}"'):
            app.execute(f"create function pg_temp.f() returns int language sql "
                        f"set {name} = '{value}' as 'select 1'")
