"""Signing keys and auth.sign, against a real server, as the roles a deployment uses.

``key_admin`` (a member of session_auth_admin) generates, imports, rotates and retires keys
and signs; ``sign_in_app`` (a LOGIN role granted session_auth_issuer: what an app's sign-in
code runs as) only signs; ``app_user`` (a plain role) verifies tokens and reads auth.jwks().
The superuser ``postgres`` sets the issuer, reads the private material (only to check that
it shows nowhere else) and runs pg_dump.

Tokens are checked by verifiers independent of the extension wherever a key's public half is
published: PyJWT (given auth.jwks(), or the public half of a key the test imported) and jose
under Node.js (createLocalJWKSet + jwtVerify; the test installs it into
tests/client/node/node_modules when missing). HMAC tokens only auth.verify can check: their
secret is readable by the extension's owner alone.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import threading
import uuid
from decimal import Decimal

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from client_support import (
    ALL_ALGS,
    HMAC_ALGS,
    RSA_ALGS,
    b64url,
    b64url_decode,
    invalid,
    json_b64,
    make_key,
    now,
    private_pem,
    rsa_private,
    split,
)
from conftest import APP_USER, KEY_ADMIN, PG_BIN, REPO, SERVER_ENV, raises_sqlstate

ADMIN_ROLE = "session_auth_admin"
ISSUER_ROLE = "session_auth_issuer"
SIGN_IN_APP = "sign_in_app"
ASYMMETRIC_ALGS = tuple(a for a in ALL_ALGS if a not in HMAC_ALGS)
IMPORTABLE_ALGS = ("ES256", "ES384", "EdDSA", "RS256", "PS256")
CLAIMS = {"sub": "user-42", "role": "authenticated", "email": "zoë@example.org",
          "app_metadata": {"provider": "email", "providers": ["email"]}}
REGISTERED = {"iat", "exp", "jti"}
ISSUER = "https://project.example.com/auth/v1"
MICROSECOND = Decimal("0.000001")
# In PKCS#8, an Ed25519 private key is OCTET STRING { OCTET STRING (32 bytes) }.
ED25519_SEED_PREFIX = bytes.fromhex("04220420")
NODE_DIR = REPO / "tests" / "client" / "node"
ISOLATIONS = pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])


# -- fixtures --------------------------------------------------------------------------------


def forget_signing_keys(cluster) -> None:
    """Deletes every signing key's private half (conftest's reset deletes auth.keys only)."""
    cluster.sql("""
        do $$
        begin
            if pg_catalog.to_regclass('auth.signing_key_material') is not null then
                delete from auth.signing_key_material;
            end if;
        end
        $$""")


@pytest.fixture
def pg(cluster):
    """conftest's `pg` (empty keyring, no settings), with no signing keys either."""
    forget_signing_keys(cluster)
    cluster.reset()
    yield cluster
    cluster.close_connections()


@pytest.fixture(scope="module")
def sign_in_app(cluster):
    """A LOGIN role granted session_auth_issuer (created by CREATE EXTENSION)."""
    cluster.sql(f"create role {SIGN_IN_APP} login")
    cluster.sql(f"grant {ISSUER_ROLE} to {SIGN_IN_APP}")
    return SIGN_IN_APP


@pytest.fixture
def admin(pg):
    return pg.connect(KEY_ADMIN)


@pytest.fixture
def app(pg):
    return pg.connect(APP_USER)


@pytest.fixture
def issuer(pg, sign_in_app):
    return pg.connect(sign_in_app)


@pytest.fixture(scope="module")
def made():
    """Private keys made by `cryptography`, to import (RS256 and PS256 share one RSA key)."""
    rsa_key = rsa_private()
    return {alg: make_key(alg, kid=f"imported-{alg}", rsa_key=rsa_key) for alg in IMPORTABLE_ALGS}


def install_jose(npm: str) -> None:
    """Installs jose into tests/client/node/node_modules unless it is there (serialised
    between concurrent test runs by a lock on package.json)."""
    marker = NODE_DIR / "node_modules" / "jose" / "package.json"
    with open(NODE_DIR / "package.json") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return
        mode = "ci" if (NODE_DIR / "package-lock.json").exists() else "install"
        command = [npm, mode, "--prefix", str(NODE_DIR), "--no-audit", "--no-fund",
                   "--loglevel=error"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                cwd=NODE_DIR)
        assert result.returncode == 0 and marker.exists(), (
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


@pytest.fixture(scope="module")
def jose():
    """verify(jwks, tokens, **options) -> one result per token, from jose's jwtVerify with
    createLocalJWKSet(jwks): {"ok": True, "payload", "header"} or {"ok": False, "code"}."""
    node, npm = shutil.which("node"), shutil.which("npm")
    # scripts/setup.sh installs Node.js and npm: their absence is a broken set-up, not a skip.
    assert node is not None and npm is not None, "the jose check needs Node.js and npm"
    install_jose(npm)

    def verify_all(jwks_document: dict, tokens: list[str], **options) -> list[dict]:
        result = subprocess.run(
            [node, str(NODE_DIR / "verify_with_jose.mjs")],
            input=json.dumps({"jwks": jwks_document, "tokens": tokens, "options": options}),
            capture_output=True, text=True, timeout=120, cwd=NODE_DIR,
        )
        assert result.returncode == 0, f"node failed:\n{result.stdout}{result.stderr}"
        results = json.loads(result.stdout)
        assert len(results) == len(tokens)
        return results

    return verify_all


# -- helpers ---------------------------------------------------------------------------------


def generate(conn, alg: str | None = None) -> str:
    if alg is None:
        return conn.execute("select auth.generate_key()").fetchone()[0]
    return conn.execute("select auth.generate_key(%s)", [alg]).fetchone()[0]


def import_key(conn, text: str, alg: str, kid: str | None = None) -> str:
    return conn.execute("select auth.import_signing_key(%s, %s, %s)",
                        [text, alg, kid]).fetchone()[0]


def rotate(conn) -> str:
    return conn.execute("select auth.rotate_signing_key()").fetchone()[0]


def retire(conn, kid: str) -> bool:
    return conn.execute("select auth.retire_key(%s)", [kid]).fetchone()[0]


def states(conn) -> dict[str, str]:
    return dict(conn.execute("select kid, state from auth.signing_keys()").fetchall())


def in_use(conn) -> list[str]:
    return [kid for kid, state in states(conn).items() if state == "in_use"]


def sign(conn, claims: dict | None = None, expires_in: str | None = None) -> str:
    payload = json.dumps(CLAIMS if claims is None else claims)
    if expires_in is None:
        return conn.execute("select auth.sign(%s::jsonb)", [payload]).fetchone()[0]
    return conn.execute("select auth.sign(%s::jsonb, %s::interval)",
                        [payload, expires_in]).fetchone()[0]


def verify(conn, token: str) -> dict:
    return conn.execute("select auth.verify(%s)", [token]).fetchone()[0]


def jwks(conn) -> dict:
    return conn.execute("select auth.jwks()").fetchone()[0]


def published(conn) -> dict[str, dict]:
    return {entry["kid"]: entry for entry in jwks(conn)["keys"]}


def decoded(token: str) -> tuple[dict, dict]:
    """Header and payload, numbers as written (Decimal), to check iat/exp to the µs."""
    h, p, _ = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p), parse_float=Decimal)


def pyjwt_verify(token: str, jwks_document: dict, **kwargs) -> dict:
    """PyJWT's verification with the key of the token's kid from a JWKS document."""
    kid = jwt.get_unverified_header(token)["kid"]
    entries = [entry for entry in jwks_document["keys"] if entry["kid"] == kid]
    assert len(entries) == 1, f"kid {kid!r} is not published once: {jwks_document}"
    key = jwt.PyJWK(entries[0])
    return jwt.decode(token, key.key, algorithms=[entries[0]["alg"]],
                      options={"verify_aud": False}, **kwargs)


def public_key_of(key):
    return key.private.public_key()


def tampered(token: str) -> str:
    h, p, s = token.split(".")
    claims = json.loads(b64url_decode(p))
    claims["role"] = "service_role"
    return f"{h}.{json_b64(claims)}.{s}"


def pem(private, form) -> str:
    return private.private_bytes(serialization.Encoding.PEM, form,
                                 serialization.NoEncryption()).decode()


def private_jwk(key) -> dict:
    """The private JWK (with "d") of an EC or Ed25519 key, as a migration would export it."""
    to_jwk = OKPAlgorithm.to_jwk if key.alg == "EdDSA" else ECAlgorithm.to_jwk
    jwk = to_jwk(key.private, as_dict=True)
    assert "d" in jwk
    return dict(jwk, kid=key.kid, alg=key.alg, use="sig")


# -- private material: what must never show ----------------------------------------------------


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def private_values_of(private) -> list[bytes]:
    """The private numbers of a key (never the public ones, which are published)."""
    if isinstance(private, bytes):
        return [private]
    if isinstance(private, ec.EllipticCurvePrivateKey):
        size = (private.curve.key_size + 7) // 8
        return [private.private_numbers().private_value.to_bytes(size, "big")]
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return [private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption())]
    if isinstance(private, rsa.RSAPrivateKey):
        n = private.private_numbers()
        return [_int_bytes(v) for v in (n.d, n.p, n.q, n.dmp1, n.dmq1, n.iqmp)]
    raise TypeError(private)


def encodings(value: bytes) -> set[str]:
    std = base64.b64encode(value).decode()
    return {value.hex(), value.hex().upper(), b64url(value), std, std.rstrip("=")}


def pem_body(text: str) -> str:
    return "".join(line.strip() for line in text.strip().splitlines()
                   if not line.startswith("-----"))


def stored_material(pg) -> dict[str, tuple[str, bytes]]:
    """kid -> (alg, private_key) of every signing key, read by the superuser."""
    rows = pg.sql("select m.kid, k.alg, m.private_key from auth.signing_key_material as m "
                  "join auth.keys as k using (kid)")
    return {kid: (alg, bytes(material)) for kid, alg, material in rows}


def material_needles(pg) -> dict[str, str]:
    """Every text form of every stored private key and private number -> whose it is."""
    needles: dict[str, str] = {}
    for kid, (alg, material) in stored_material(pg).items():
        values = [material]
        if alg in HMAC_ALGS:
            with_text = material
        else:
            try:
                values += private_values_of(serialization.load_der_private_key(material, None))
            except ValueError:
                # `cryptography` reads no PKCS#8 v2 (OneAsymmetricKey with the public key), in
                # which Ed25519 keys are stored: the seed is the inner OCTET STRING.
                marker = material.find(ED25519_SEED_PREFIX)
                assert alg == "EdDSA" and marker > 0, f"{alg} key {kid}: unreadable material"
                start = marker + len(ED25519_SEED_PREFIX)
                values.append(material[start:start + 32])
            with_text = None
        for value in values:
            for text in encodings(value):
                needles[text] = f"{alg} key {kid}"
        if with_text is not None:
            try:
                needles[with_text.decode()] = f"{alg} key {kid}"
            except UnicodeDecodeError:
                pass
    assert needles, "no signing key material was stored"
    return needles


def key_text_needles(text: str) -> set[str]:
    """What of a key text given to the server must not come back: the text, each line of
    its PEM body or JSON member value of 16 characters or more."""
    needles = {text, text.strip()}
    if "-----BEGIN" in text:
        needles.add(pem_body(text))
        needles |= {line.strip() for line in text.splitlines()
                    if len(line.strip()) >= 16 and not line.startswith("-----")}
    if text.strip().startswith("{"):
        needles |= {value for value in json.loads(text).values()
                    if isinstance(value, str) and len(value) >= 16}
    return {needle for needle in needles if needle}


def assert_contains_none(needles, text: str, where: str) -> None:
    needles = needles if isinstance(needles, dict) else {n: "the key text" for n in needles}
    found = sorted({whose for needle, whose in needles.items() if needle in text})
    assert not found, f"{where} shows the private material of {found}"


def readable_columns_text(pg, role: str) -> str:
    """Everything `role` can select from the relations of schema auth, as text."""
    columns = pg.sql("""
        select c.oid::regclass::text, a.attname
        from pg_class as c
        join pg_namespace as n on n.oid = c.relnamespace
        join pg_attribute as a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        where n.nspname = 'auth' and c.relkind in ('r', 'v', 'm', 'p', 'f')
          and has_column_privilege(%s, c.oid, a.attnum, 'SELECT')
        order by 1, 2""", [role])
    conn = pg.connect(role)
    parts = []
    for relation, column in columns:
        rows = conn.execute(f'select "{column}"::text from {relation}').fetchall()
        parts += [f"{relation}.{column}={row[0]}" for row in rows]
    return "\n".join(parts)


# == roles ===================================================================================


def test_create_extension_creates_both_roles_nologin(pg):
    rows = pg.sql("select rolname, rolcanlogin, rolsuper from pg_roles "
                  "where rolname in (%s, %s) order by rolname", [ADMIN_ROLE, ISSUER_ROLE])
    assert rows == [(ADMIN_ROLE, False, False), (ISSUER_ROLE, False, False)]


# == generating keys =========================================================================


def test_generate_key_defaults_to_es256(admin):
    kid = generate(admin)
    assert isinstance(kid, str) and kid
    assert admin.execute("select kid, alg from auth.signing_keys()").fetchall() == [(kid, "ES256")]
    token = sign(admin)
    assert split(token)[0] == {"alg": "ES256", "typ": "JWT", "kid": kid}
    entry = published(admin)[kid]
    assert (entry["kty"], entry["crv"], entry["alg"]) == ("EC", "P-256", "ES256")


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_generate_key_of_each_algorithm_signs_verifiable_tokens(admin, app, alg):
    """A generated key of `alg` is in use, its public half is a row of auth.keys and (unless
    HMAC) published; its tokens verify with auth.verify and (unless HMAC) with PyJWT given
    auth.jwks()."""
    kid = generate(admin, alg)
    assert isinstance(kid, str) and kid
    assert admin.execute("select kid, alg, state from auth.signing_keys()").fetchall() == [
        (kid, alg, "in_use")]
    keyring_row = admin.execute("select alg, public_jwk from auth.keys where kid = %s",
                                [kid]).fetchall()
    assert len(keyring_row) == 1 and keyring_row[0][0] == alg, keyring_row
    token = sign(admin)
    header, payload, _ = split(token)
    assert header == {"alg": alg, "typ": "JWT", "kid": kid}
    assert verify(app, token) == payload
    document = jwks(app)
    if alg in HMAC_ALGS:
        assert kid not in {entry["kid"] for entry in document["keys"]}
        assert keyring_row[0][1] is None
        return
    entry = published(app)[kid]
    assert entry["alg"] == alg and entry["use"] == "sig"
    assert {k: v for k, v in keyring_row[0][1].items() if k in ("kty", "crv", "n", "e", "x", "y")} \
        == {k: v for k, v in entry.items() if k in ("kty", "crv", "n", "e", "x", "y")}
    assert pyjwt_verify(token, document) == payload


def test_generated_keys_have_the_documented_sizes(pg, admin):
    """RSA keys have 2048 bits, EC keys their algorithm's curve, HMAC secrets at least 32
    bytes; every key gets its own kid."""
    kids = {alg: generate(admin, alg) for alg in ALL_ALGS}
    assert len(set(kids.values())) == len(ALL_ALGS)
    document = published(admin)
    for alg in RSA_ALGS:
        assert len(b64url_decode(document[kids[alg]]["n"])) * 8 == 2048, alg
    assert document[kids["ES256"]]["crv"] == "P-256"
    assert document[kids["ES384"]]["crv"] == "P-384"
    assert (document[kids["EdDSA"]]["kty"], document[kids["EdDSA"]]["crv"]) == ("OKP", "Ed25519")
    material = stored_material(pg)
    for alg in HMAC_ALGS:
        assert len(material[kids[alg]][1]) >= 32, alg
    assert len({material[kids[alg]][1] for alg in HMAC_ALGS}) == len(HMAC_ALGS)


# == states ==================================================================================


def test_first_key_is_in_use_later_ones_standby(admin, made):
    first = generate(admin, "ES256")
    assert states(admin) == {first: "in_use"}
    second = generate(admin, "EdDSA")
    imported = import_key(admin, private_pem(made["ES384"]), "ES384")
    assert states(admin) == {first: "in_use", second: "standby", imported: "standby"}
    rows = admin.execute("select kid, alg, state, created_at from auth.signing_keys()").fetchall()
    assert {row[0]: row[1] for row in rows} == {first: "ES256", second: "EdDSA", imported: "ES384"}
    assert all(row[3] is not None for row in rows)


def test_signing_keys_lists_kid_alg_state_created_at_only(admin):
    generate(admin, "HS256")
    cursor = admin.execute("select * from auth.signing_keys()")
    assert [column.name for column in cursor.description] == ["kid", "alg", "state", "created_at"]
    assert len(cursor.fetchall()) == 1


def test_standby_keys_are_published_but_do_not_sign(admin, app):
    signing = generate(admin, "ES256")
    standby = {alg: generate(admin, alg) for alg in ("ES384", "EdDSA", "RS256", "HS256")}
    assert states(admin) == {signing: "in_use", **{kid: "standby" for kid in standby.values()}}
    kids = set(published(app))
    assert kids == {signing, standby["ES384"], standby["EdDSA"], standby["RS256"]}
    for _ in range(5):
        token = sign(admin)
        assert split(token)[0]["kid"] == signing
        assert verify(app, token)["sub"] == CLAIMS["sub"]


def test_standby_key_verifies(admin, app, made):
    """A standby key (here one the test holds the private half of) verifies tokens before
    it signs any: publish before use."""
    generate(admin, "ES256")
    key = made["EdDSA"]
    kid = import_key(admin, private_pem(key), "EdDSA", "standby-eddsa")
    assert states(admin)[kid] == "standby"
    payload = dict(CLAIMS, iat=now(), exp=now() + 600)
    assert verify(app, key.sign(payload, kid=kid)) == payload


def test_rotate_puts_the_newest_standby_in_use(admin, app):
    first = generate(admin, "ES256")
    older = generate(admin, "EdDSA")
    newest = generate(admin, "ES384")
    assert rotate(admin) == newest
    assert states(admin) == {first: "previously_used", older: "standby", newest: "in_use"}
    assert split(sign(admin))[0]["kid"] == newest
    assert rotate(admin) == older
    assert states(admin) == {first: "previously_used", older: "in_use", newest: "previously_used"}
    token = sign(admin)
    assert split(token)[0] == {"alg": "EdDSA", "typ": "JWT", "kid": older}
    assert verify(app, token)["sub"] == CLAIMS["sub"]
    # Previously used keys stay published.
    assert set(published(app)) == {first, older, newest}


def test_rotate_without_a_standby_key_is_55000(admin):
    with raises_sqlstate("55000"):
        rotate(admin)
    only = generate(admin, "ES256")
    with raises_sqlstate("55000"):
        rotate(admin)
    assert states(admin) == {only: "in_use"}
    standby = generate(admin, "EdDSA")
    assert rotate(admin) == standby
    # Only a previously used key left besides the one in use: nothing to rotate to.
    with raises_sqlstate("55000"):
        rotate(admin)
    assert states(admin) == {only: "previously_used", standby: "in_use"}
    assert split(sign(admin))[0]["kid"] == standby


def test_exactly_one_key_is_in_use(admin, made):
    steps = [
        lambda: generate(admin, "ES256"),
        lambda: generate(admin, "HS256"),
        lambda: import_key(admin, private_pem(made["RS256"]), "RS256"),
        lambda: rotate(admin),
        lambda: generate(admin, "EdDSA"),
        lambda: rotate(admin),
        lambda: rotate(admin),
        lambda: import_key(admin, json.dumps(private_jwk(made["ES256"])), "ES256"),
    ]
    for number, step in enumerate(steps):
        step()
        assert len(in_use(admin)) == 1, (number, states(admin))


def test_concurrent_first_keys_put_exactly_one_in_use(pg):
    """Two admins generate the first key at once, each in an open transaction: one key is
    put in use, the other waits and becomes standby."""
    first = pg.connect(KEY_ADMIN, autocommit=False)
    second = pg.connect(KEY_ADMIN, autocommit=False)
    kid_first = generate(first)
    outcome: dict = {}

    def other() -> None:
        try:
            outcome["kid"] = generate(second)
            second.commit()
        except Exception as error:  # reported below
            outcome["error"] = error

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(1.0)
    first.commit()
    thread.join(30)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    admin = pg.connect(KEY_ADMIN)
    assert states(admin) == {kid_first: "in_use", outcome["kid"]: "standby"}


def test_each_database_has_its_own_key_in_use(pg, admin):
    here = generate(admin)
    pg.sql("create database signing_other")
    try:
        pg.connect(dbname="signing_other").execute("create extension pg_session_auth")
        other = pg.connect(KEY_ADMIN, dbname="signing_other")
        there = generate(other)
        assert states(other) == {there: "in_use"}
        assert states(admin) == {here: "in_use"}
        assert split(sign(other))[0]["kid"] == there
        assert split(sign(admin))[0]["kid"] == here
    finally:
        pg.close_connections()
        pg.sql("drop database if exists signing_other with (force)")


def test_tokens_signed_before_a_rotation_still_verify(admin, app):
    old = generate(admin, "ES256")
    before = sign(admin)
    new = generate(admin, "RS256")
    assert rotate(admin) == new
    assert states(admin)[old] == "previously_used"
    payload = split(before)[1]
    assert verify(app, before) == payload
    assert pyjwt_verify(before, jwks(app)) == payload
    after = sign(admin)
    assert split(after)[0]["kid"] == new
    assert verify(app, after) == split(after)[1]


# == retiring ================================================================================


def test_retired_signing_key_is_revoked_refused_and_unpublished(admin, app):
    kid = generate(admin, "ES256")
    standby = generate(admin, "EdDSA")
    token = sign(admin)
    assert verify(app, token)["sub"] == CLAIMS["sub"]
    assert retire(admin, kid) is True
    assert states(admin) == {kid: "revoked", standby: "standby"}
    with raises_sqlstate("28000", invalid("retired key")):
        verify(app, token)
    assert kid not in published(app)
    assert standby in published(app)
    # It signs no more; no key is in use until the standby is put in use.
    with raises_sqlstate("55000"):
        sign(admin)
    assert rotate(admin) == standby
    assert split(sign(admin))[0]["kid"] == standby
    assert states(admin) == {kid: "revoked", standby: "in_use"}
    with raises_sqlstate("28000", invalid("retired key")):
        verify(app, token)


def test_retired_standby_key_is_never_put_in_use(admin, app):
    signing = generate(admin, "ES256")
    standby = generate(admin, "ES384")
    assert retire(admin, standby) is True
    assert states(admin) == {signing: "in_use", standby: "revoked"}
    assert standby not in published(app)
    with raises_sqlstate("55000"):
        rotate(admin)
    assert split(sign(admin))[0]["kid"] == signing


def test_generate_after_retiring_the_key_in_use_puts_the_new_key_in_use(admin):
    old = generate(admin, "ES256")
    retire(admin, old)
    new = generate(admin, "EdDSA")
    assert states(admin) == {old: "revoked", new: "in_use"}
    assert split(sign(admin))[0]["kid"] == new


@ISOLATIONS
def test_retiring_the_key_in_use_takes_effect_from_the_next_statement(pg, admin, isolation):
    """Open transactions that signed and verified with the key (so it is loaded in their
    backends) neither sign nor verify with it from the statement after the retirement
    commits."""
    kid = generate(admin, "ES256")
    signer = pg.connect(KEY_ADMIN)
    verifier = pg.connect(APP_USER)
    signer.execute(f"begin isolation level {isolation}")
    verifier.execute(f"begin isolation level {isolation}")
    token = sign(signer)
    assert verify(verifier, token)["sub"] == CLAIMS["sub"]
    assert retire(admin, kid) is True
    with raises_sqlstate("55000"):
        sign(signer)
    with raises_sqlstate("28000", invalid("retired key")):
        verify(verifier, token)
    signer.execute("rollback")
    verifier.execute("rollback")


# == auth.sign ===============================================================================


def test_sign_sets_header_and_registered_claims(admin, app):
    kid = generate(admin, "ES256")
    low, token, high = admin.execute(
        "select extract(epoch from transaction_timestamp()), auth.sign(%s::jsonb), "
        "extract(epoch from clock_timestamp())", [json.dumps(CLAIMS)]).fetchone()
    header, payload = decoded(token)
    assert header == {"alg": "ES256", "typ": "JWT", "kid": kid}
    # The claims given, plus iat, exp and jti; no iss without pg_session_auth.issuer.
    assert set(payload) == set(CLAIMS) | REGISTERED
    assert {name: payload[name] for name in CLAIMS} == CLAIMS
    assert low <= payload["iat"] <= high, (low, payload["iat"], high)
    assert abs(payload["exp"] - payload["iat"] - 3600) <= MICROSECOND, (
        f"exp must be iat + expires_in: iat {payload['iat']}, exp {payload['exp']}")
    assert uuid.UUID(payload["jti"]).version == 4
    assert verify(app, token) == split(token)[1]


def test_sign_iat_is_to_the_microsecond(admin):
    generate(admin, "EdDSA")
    iats = [decoded(sign(admin))[1]["iat"] for _ in range(10)]
    for iat in iats:
        assert Decimal(iat) == Decimal(iat).quantize(MICROSECOND), iat
    assert any(Decimal(iat) != int(iat) for iat in iats), f"whole seconds only: {iats}"


@pytest.mark.parametrize("expires_in,seconds", [
    ("1 hour", 3600), ("15 minutes", 900), ("90 seconds", 90), ("2 days", 172800),
    ("00:00:01.5", Decimal("1.5")),
])
def test_sign_exp_is_iat_plus_expires_in(admin, app, expires_in, seconds):
    generate(admin, "ES256")
    token = sign(admin, expires_in=expires_in)
    payload = decoded(token)[1]
    assert abs(payload["exp"] - payload["iat"] - seconds) <= MICROSECOND, (
        f"exp must be iat + {seconds} s: iat {payload['iat']}, exp {payload['exp']}")
    assert verify(app, token) == split(token)[1]


def test_sign_jti_is_a_new_uuid_for_every_call(admin):
    generate(admin, "HS256")
    tokens = [row[0] for row in admin.execute(
        "select auth.sign(%s::jsonb) from generate_series(1, 50)", [json.dumps(CLAIMS)])]
    tokens += [sign(admin) for _ in range(10)]
    jtis = [decoded(token)[1]["jti"] for token in tokens]
    assert all(uuid.UUID(jti).version == 4 for jti in jtis)
    assert len(set(jtis)) == len(jtis) == 60


def test_sign_sets_iss_from_the_database_setting(pg):
    pg.sql(f"alter database postgres set pg_session_auth.issuer = '{ISSUER}'")
    admin = pg.connect(KEY_ADMIN)
    app = pg.connect(APP_USER)
    generate(admin, "ES256")
    token = sign(admin)
    payload = split(token)[1]
    assert payload["iss"] == ISSUER
    assert set(payload) == set(CLAIMS) | REGISTERED | {"iss"}
    # Verified under the same setting (which requires exactly this iss).
    assert verify(app, token) == payload
    assert pyjwt_verify(token, jwks(app), issuer=ISSUER) == payload


def test_sign_sets_iss_from_a_session_setting(pg, admin):
    generate(admin, "EdDSA")
    su = pg.connect()
    su.execute(f"set pg_session_auth.issuer = '{ISSUER}'")
    assert split(sign(su))[1]["iss"] == ISSUER
    # After SET ROLE to an admin (the pooler pattern) the setting still applies.
    su.execute(f"set role {KEY_ADMIN}")
    assert split(sign(su))[1]["iss"] == ISSUER
    # Another session without the setting: no iss.
    assert "iss" not in split(sign(admin))[1]


def test_hmac_tokens_verify_with_auth_verify_only(admin, app):
    """An HS256 key signs, auth.verify checks; its secret is published nowhere, so no
    outside verifier can (the JWKS has no key for its kid)."""
    kid = generate(admin, "HS256")
    token = sign(admin)
    assert split(token)[0] == {"alg": "HS256", "typ": "JWT", "kid": kid}
    assert verify(app, token) == split(token)[1]
    assert kid not in published(app)
    with raises_sqlstate("28000", invalid("bad signature")):
        verify(app, tampered(token))


@pytest.mark.parametrize("alg", ASYMMETRIC_ALGS)
def test_signed_tokens_verify_with_node_jose(admin, app, jose, alg):
    kid = generate(admin, alg)
    token = sign(admin)
    good, bad = jose(jwks(app), [token, tampered(token)])
    assert good["ok"], good
    assert good["header"] == {"alg": alg, "typ": "JWT", "kid": kid}
    assert good["payload"] == split(token)[1]
    assert (bad["ok"], bad["code"]) == (False, "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"), bad


def test_tokens_of_previously_used_keys_verify_with_node_jose(admin, app, jose):
    tokens = {}
    for alg in ASYMMETRIC_ALGS:
        kid = generate(admin, alg)
        if states(admin)[kid] != "in_use":
            assert rotate(admin) == kid
        tokens[alg] = (kid, sign(admin))
    document = jwks(app)
    # Every key was in use once; the earlier ones are previously used, still published.
    assert len(document["keys"]) == len(ASYMMETRIC_ALGS)
    results = jose(document, [token for _, token in tokens.values()])
    for (alg, (kid, token)), result in zip(tokens.items(), results):
        assert result["ok"], (alg, result)
        assert result["header"] == {"alg": alg, "typ": "JWT", "kid": kid}
        assert result["payload"] == split(token)[1]


def test_signed_tokens_with_iss_verify_with_node_jose(pg, jose):
    pg.sql(f"alter database postgres set pg_session_auth.issuer = '{ISSUER}'")
    admin = pg.connect(KEY_ADMIN)
    generate(admin, "ES256")
    token = sign(admin, expires_in="5 minutes")
    # (Not maxTokenAge: jose compares iat with the current whole second, so a fractional iat
    # of this second would need clockTolerance.)
    document = jwks(pg.connect(APP_USER))
    [result] = jose(document, [token], issuer=ISSUER)
    assert result["ok"], result
    assert result["payload"]["iss"] == ISSUER
    [result] = jose(document, [token], issuer="https://other.example")
    assert (result["ok"], result["code"]) == (False, "ERR_JWT_CLAIM_VALIDATION_FAILED"), result


# == who may sign ============================================================================


def test_plain_role_may_not_sign(admin, app):
    generate(admin, "ES256")
    with raises_sqlstate("42501"):
        sign(app)
    with raises_sqlstate("42501"):
        sign(app, expires_in="1 minute")


def test_admin_and_issuer_roles_may_sign(admin, issuer, app):
    kid = generate(admin, "ES256")
    for conn in (admin, issuer):
        token = sign(conn)
        assert split(token)[0]["kid"] == kid
        assert verify(app, token) == split(token)[1]


def test_sign_without_a_key_in_use_is_55000(admin, issuer, made):
    with raises_sqlstate("55000"):
        sign(admin)
    with raises_sqlstate("55000"):
        sign(issuer)
    # Verification keys (no private half) never sign.
    es = made["ES256"]
    admin.execute("select auth.add_key('verify-only-es', 'ES256', %s)", [es.public_pem])
    admin.execute("select auth.add_key('verify-only-hs', 'HS256', %s)", ["v" * 40])
    with raises_sqlstate("55000"):
        sign(admin)


@pytest.mark.parametrize("role", [APP_USER, SIGN_IN_APP])
def test_only_admins_manage_signing_keys(pg, admin, made, sign_in_app, role):
    kid = generate(admin, "ES256")
    generate(admin, "EdDSA")
    conn = pg.connect(role)
    for statement, params in [
        ("select auth.generate_key()", None),
        ("select auth.generate_key('HS256')", None),
        ("select auth.import_signing_key(%s, 'ES256')", [private_pem(made["ES256"])]),
        ("select auth.import_signing_key(%s, 'ES256', 'mine')", [private_pem(made["ES256"])]),
        ("select auth.rotate_signing_key()", None),
        ("select auth.retire_key(%s)", [kid]),
        ("select * from auth.signing_keys()", None),
    ]:
        with raises_sqlstate("42501"):
            conn.execute(statement, params)
    assert len(states(admin)) == 2 and in_use(admin) == [kid]


# == private material ========================================================================


@pytest.mark.parametrize("role", [KEY_ADMIN, APP_USER, SIGN_IN_APP])
def test_material_table_is_closed_to_every_role_but_the_owner(pg, admin, sign_in_app, role):
    generate(admin, "ES256")
    generate(admin, "HS256")
    conn = pg.connect(role)
    for statement in (
        "select * from auth.signing_key_material",
        "select private_key from auth.signing_key_material",
        "select kid, state from auth.signing_key_material",
        "select count(*) from auth.signing_key_material",
        "select m::text from auth.signing_key_material as m",
        "insert into auth.signing_key_material (kid, private_key, state) "
        "values ('x', '\\x00', 'in_use')",
        "update auth.signing_key_material set state = 'in_use'",
        "delete from auth.signing_key_material",
        "truncate auth.signing_key_material",
    ):
        with raises_sqlstate("42501"):
            conn.execute(statement)
    assert pg.sql("select count(*) from auth.signing_key_material")[0][0] == 2


def test_hmac_secret_column_is_owner_only(pg, admin, issuer, app):
    hs = generate(admin, "HS256")
    es = generate(admin, "ES256")
    for conn in (admin, issuer, app):
        for statement in ("select secret from auth.keys",
                          "select * from auth.keys",
                          "select k::text from auth.keys as k",
                          "select kid from auth.keys where secret is not null"):
            with raises_sqlstate("42501"):
                conn.execute(statement)
    # Admins see the other columns.
    rows = admin.execute("select kid, alg, public_jwk is null, created_at is not null, "
                         "retired_at from auth.keys order by alg").fetchall()
    assert rows == [(es, "ES256", False, True, None), (hs, "HS256", True, True, None)]


def test_material_never_appears_in_jwks_signing_keys_or_readable_columns(pg, admin, made,
                                                                         sign_in_app):
    for alg in ALL_ALGS:
        generate(admin, alg)
    import_key(admin, private_pem(made["ES256"]), "ES256")
    import_key(admin, json.dumps(private_jwk(made["EdDSA"])), "EdDSA")
    import_key(admin, pem(made["RS256"].private, serialization.PrivateFormat.TraditionalOpenSSL),
               "RS256")
    hmac_secret = "imported hmac secret " + uuid.uuid4().hex
    import_key(admin, hmac_secret, "HS256")
    needles = material_needles(pg)
    for key in (made["ES256"], made["EdDSA"], made["RS256"]):
        for value in private_values_of(key.private):
            needles.update({text: f"imported {key.alg}" for text in encodings(value)})
    needles[hmac_secret] = "imported HS256"
    needles.update({text: "imported HS256" for text in encodings(hmac_secret.encode())})

    app = pg.connect(APP_USER)
    text = app.execute("select auth.jwks()::text").fetchone()[0]
    assert_contains_none(needles, text, "auth.jwks()")
    for entry in json.loads(text)["keys"]:
        assert not set(entry) & {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}, entry
    rows = admin.execute("select t::text from auth.signing_keys() as t").fetchall()
    assert len(rows) == len(ALL_ALGS) + 4
    assert_contains_none(needles, "\n".join(r[0] for r in rows), "auth.signing_keys()")
    for role in (KEY_ADMIN, sign_in_app, APP_USER):
        assert_contains_none(needles, readable_columns_text(pg, role),
                             f"what {role} can select in schema auth")
    su = pg.connect()
    for (view,) in su.execute("select format('%I.%I', schemaname, viewname) from pg_views "
                              "where schemaname = 'auth'").fetchall():
        rows = su.execute(f"select v::text from {view} as v").fetchall()
        assert_contains_none(needles, "\n".join(r[0] for r in rows), f"view {view}")


def bad_imports(made) -> list[tuple[str, str, str, object]]:
    """(what, key text, alg, the private key it holds or None) that import_signing_key must
    refuse with 22023; the random texts are new on every call."""
    es, ed, rs = made["ES256"], made["EdDSA"], made["RS256"]
    der = es.private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    truncated = ("-----BEGIN PRIVATE KEY-----\n"
                 + base64.encodebytes(der[:-12]).decode()
                 + "-----END PRIVATE KEY-----\n")
    garbage = f"this is no key at all {uuid.uuid4().hex} {uuid.uuid4().hex}"
    short_secret = ("s3cr3t-" + uuid.uuid4().hex)[:31]
    assert len(short_secret.encode()) == 31
    rsa_pkcs1 = pem(rs.private, serialization.PrivateFormat.TraditionalOpenSSL)
    return [
        ("a public PEM (EC)", es.public_pem, "ES256", None),
        ("a public PEM (RSA)", rs.public_pem, "RS256", None),
        ("a public PEM (Ed25519)", ed.public_pem, "EdDSA", None),
        ("a public JWK (EC)", json.dumps(dict(es.public_jwk, kid="pub")), "ES256", None),
        ("a public JWK (OKP)", json.dumps(dict(ed.public_jwk, kid="pub")), "EdDSA", None),
        ("garbage for ES256", garbage, "ES256", None),
        ("garbage for RS256", garbage, "RS256", None),
        ("garbage for EdDSA", garbage, "EdDSA", None),
        ("a truncated PKCS#8 PEM", truncated, "ES256", es.private),
        ("a P-256 key as ES384", private_pem(es), "ES384", es.private),
        ("an EC key as RS256", private_pem(es), "RS256", es.private),
        ("an RSA PKCS#1 key as ES256", rsa_pkcs1, "ES256", rs.private),
        ("an Ed25519 key as ES256", private_pem(ed), "ES256", ed.private),
        ("a 31-byte HMAC secret", short_secret, "HS256", None),
    ]


def error_needles(text: str, private) -> set[str]:
    """What the error for a refused key text must not show."""
    needles = key_text_needles(text)
    if private is not None:
        for value in private_values_of(private):
            needles |= encodings(value)
    return needles


def test_import_refuses_public_keys_garbage_and_short_secrets_without_echoing(pg, admin, made):
    for what, text, alg, private in bad_imports(made):
        with raises_sqlstate("22023") as caught:
            import_key(admin, text, alg, "refused")
        needles = error_needles(text, private)
        for message in caught.texts():
            assert_contains_none(needles, message, f"the error for {what}")
    assert admin.execute("select count(*) from auth.signing_keys()").fetchone()[0] == 0
    assert pg.sql("select count(*) from auth.keys")[0][0] == 0
    assert pg.sql("select count(*) from auth.signing_key_material")[0][0] == 0


def test_material_never_appears_in_the_server_log(pg, made):
    """With key_admin's backend logging at DEBUG1: generating, importing (good and bad
    keys), signing and retiring put no private material in the server log."""
    pg.sql(f"alter role {KEY_ADMIN} set log_min_messages = 'debug1'")
    pg.sql(f"alter role {KEY_ADMIN} set log_error_verbosity = 'verbose'")
    admin = pg.connect(KEY_ADMIN)
    assert admin.execute("show log_min_messages").fetchone()[0] == "debug1"
    kids = [generate(admin, alg) for alg in ("ES256", "EdDSA", "RS256", "HS256", "ES384")]
    imported = [
        (private_pem(made["ES256"]), "ES256", made["ES256"].private),
        (pem(made["ES384"].private, serialization.PrivateFormat.TraditionalOpenSSL), "ES384",
         made["ES384"].private),
        (pem(made["RS256"].private, serialization.PrivateFormat.TraditionalOpenSSL), "RS256",
         made["RS256"].private),
        (json.dumps(private_jwk(made["EdDSA"])), "EdDSA", made["EdDSA"].private),
        ("imported hmac secret " + uuid.uuid4().hex, "HS256", None),
    ]
    for text, alg, _ in imported:
        import_key(admin, text, alg)
    refused, errors = bad_imports(made), []
    for what, text, alg, _ in refused:
        with raises_sqlstate("22023") as caught:
            import_key(admin, text, alg)
        errors.append(caught.message)
    sign(admin)
    retire(admin, kids[0])
    generate(admin, "EdDSA")
    sign(admin)

    needles = material_needles(pg)
    for text, _, private in imported + [(text, None, private) for _, text, _, private in refused]:
        needles.update({needle: "a key text sent" for needle in error_needles(text, private)})
    pg.close_connections()
    log = pg.server_log()
    # The check is not vacuous: the refused imports were logged.
    for message in errors:
        assert message in log, f"{message!r} is not in the server log"
    assert_contains_none(needles, log, "the server log")


def _copy_rows(dump: str, table: str) -> list[dict[str, str]]:
    lines = dump.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"COPY {table} (")]
    assert len(starts) == 1, f"the dump has {len(starts)} COPY of {table}"
    columns = lines[starts[0]][len(f"COPY {table} ("):].split(")")[0].split(", ")
    rows = []
    for line in lines[starts[0] + 1:]:
        if line == "\\.":
            break
        rows.append(dict(zip(columns, line.split("\t"))))
    return rows


def _pg_dump(pg, *args: str) -> str:
    env = dict(os.environ)
    env.update(setting.split("=", 1) for setting in SERVER_ENV)
    result = subprocess.run(
        [f"{PG_BIN}/pg_dump", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
         "-d", "postgres", *args],
        capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("args", [(), ("--data-only",)], ids=["full", "data-only"])
def test_pg_dump_by_a_superuser_keeps_the_material(pg, admin, made, args):
    generate(admin, "ES256")
    generate(admin, "HS256")
    import_key(admin, private_pem(made["EdDSA"]), "EdDSA")
    material = stored_material(pg)
    rows = _copy_rows(_pg_dump(pg, *args), "auth.signing_key_material")
    assert len(rows) == len(material) == 3
    dumped = {}
    for row in rows:
        value = row["private_key"].replace("\\\\", "\\")
        assert value.startswith("\\x"), value[:10]
        dumped[row["kid"]] = bytes.fromhex(value[2:])
    assert dumped == {kid: stored for kid, (_, stored) in material.items()}
    assert {row["kid"]: row["state"] for row in rows} == states(admin)


# == importing ===============================================================================


def _check_imported(admin, app, key, kid, alg) -> None:
    """`kid` is in use; its tokens verify with auth.verify and with PyJWT given the public
    half the test kept; what auth.jwks() publishes for it is that public half."""
    assert states(admin) == {kid: "in_use"}
    token = sign(admin)
    header, payload, _ = split(token)
    assert header == {"alg": alg, "typ": "JWT", "kid": kid}
    assert jwt.decode(token, public_key_of(key), algorithms=[alg],
                      options={"verify_aud": False}) == payload
    assert verify(app, token) == payload
    entry = published(app)[kid]
    members = ("kty", "crv", "n", "e", "x", "y")
    assert {m: entry.get(m) for m in members} == {m: key.public_jwk.get(m) for m in members}


@pytest.mark.parametrize("alg", IMPORTABLE_ALGS)
def test_import_pkcs8_pem(admin, app, made, alg):
    key = made[alg]
    kid = import_key(admin, private_pem(key), alg)
    assert isinstance(kid, str) and kid
    _check_imported(admin, app, key, kid, alg)


@pytest.mark.parametrize("alg", ["ES256", "ES384"])
def test_import_sec1_ec_pem(admin, app, made, alg):
    key = made[alg]
    text = pem(key.private, serialization.PrivateFormat.TraditionalOpenSSL)
    assert text.startswith("-----BEGIN EC PRIVATE KEY-----")
    kid = import_key(admin, text, alg)
    _check_imported(admin, app, key, kid, alg)


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_import_pkcs1_rsa_pem(admin, app, made, alg):
    key = made[alg]
    text = pem(key.private, serialization.PrivateFormat.TraditionalOpenSSL)
    assert text.startswith("-----BEGIN RSA PRIVATE KEY-----")
    kid = import_key(admin, text, alg)
    _check_imported(admin, app, key, kid, alg)


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA"])
def test_import_private_jwk(admin, app, made, alg):
    key = made[alg]
    kid = import_key(admin, json.dumps(private_jwk(key)), alg)
    _check_imported(admin, app, key, kid, alg)


def test_import_hmac_secret(admin, app):
    secret = "a shared secret of a migrated project " + uuid.uuid4().hex
    kid = import_key(admin, secret, "HS256", "legacy-hs256")
    assert kid == "legacy-hs256"
    assert states(admin) == {kid: "in_use"}
    token = sign(admin)
    header, payload, _ = split(token)
    assert header == {"alg": "HS256", "typ": "JWT", "kid": kid}
    assert jwt.decode(token, secret.encode(), algorithms=["HS256"],
                      options={"verify_aud": False}) == payload
    assert verify(app, token) == payload
    assert kid not in published(app)


def test_import_returns_the_given_kid_or_a_new_one_and_follows_the_state_rule(admin, app, made):
    given = import_key(admin, private_pem(made["ES256"]), "ES256", "migrated-es256")
    assert given == "migrated-es256"
    # Without a kid (the argument left out): a new one.
    new = admin.execute("select auth.import_signing_key(%s, 'EdDSA')",
                        [private_pem(made["EdDSA"])]).fetchone()[0]
    assert new and new not in (given, made["EdDSA"].kid)
    assert states(admin) == {given: "in_use", new: "standby"}
    assert split(sign(admin))[0]["kid"] == given


# == NULL ====================================================================================


NULL_CALLS = {
    "generate_key(NULL)": ("select auth.generate_key(NULL)", None),
    "import_signing_key(NULL key)": ("select auth.import_signing_key(NULL, 'ES256')", None),
    "import_signing_key(NULL key, kid)":
        ("select auth.import_signing_key(NULL, 'ES256', 'k')", None),
    "import_signing_key(NULL alg)": ("select auth.import_signing_key(%s, NULL)", "pem"),
    "sign(NULL claims)": ("select auth.sign(NULL)", None),
    "sign(NULL claims, interval)": ("select auth.sign(NULL, '1 hour')", None),
    "sign(claims, NULL interval)": ("select auth.sign('{}', NULL)", None),
}


@pytest.mark.parametrize("statement,param", NULL_CALLS.values(), ids=NULL_CALLS.keys())
def test_null_arguments_are_22004(pg, admin, made, statement, param):
    if statement.startswith("select auth.sign"):
        kid = generate(admin, "ES256")
        expected = {kid: "in_use"}
    else:
        expected = {}
    params = [private_pem(made["ES256"])] if param == "pem" else None
    with raises_sqlstate("22004"):
        admin.execute(statement, params)
    assert states(admin) == expected
