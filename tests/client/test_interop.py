"""Interoperability with an independent JWT implementation (PyJWT + cryptography).

PyJWT generates the keys and signs the tokens for every supported algorithm; the extension
gets the public keys as PEM, as JWK (auth.add_key) and as a JWKS (auth.import_jwks), and
auth.verify, called by a plain non-superuser role, must return exactly the signed claims.
Tampered copies must be rejected with SQLSTATE 28000 and the expected reason.
"""

from __future__ import annotations

import json

import pytest

from client_support import (
    ALL_ALGS,
    HMAC_ALGS,
    RSA_ALGS,
    assemble,
    b64url,
    b64url_decode,
    claims,
    hmac_token,
    invalid,
    json_b64,
    make_key,
    split,
)
from conftest import APP_USER, KEY_ADMIN, raises_sqlstate

ASYMMETRIC_ALGS = tuple(a for a in ALL_ALGS if a not in HMAC_ALGS)


def rich_claims() -> dict:
    """Claims exercising every JSON type, nesting and non-ASCII text."""
    return claims(
        iss="https://issuer.example/",
        aud=["api", "web"],
        nbf=claims()["iat"] - 10,
        jti="f0e1d2c3-b4a5",
        email="zoë@exämple.org",
        emoji="\U0001F510 ok",
        quote='a "quoted" \\ back\\slash\nnew line',
        scopes=["read", "write"],
        admin=False,
        verified=True,
        nothing=None,
        count=-7,
        ratio=2.5,
        big=9007199254740993,
        app_metadata={"provider": "email", "tenants": [{"id": 1}, {"id": 2, "x": []}]},
    )


@pytest.fixture(scope="module")
def keys():
    """One PyJWT-generated key per algorithm, plus a second ("other") key per algorithm."""
    made = {alg: make_key(alg, kid=f"{alg}-main") for alg in ALL_ALGS}
    others = {alg: make_key(alg, kid=f"{alg}-main") for alg in ALL_ALGS}
    return made, others


@pytest.fixture
def admin(pg):
    return pg.connect(KEY_ADMIN)


@pytest.fixture
def app(pg):
    return pg.connect(APP_USER)


def verify(conn, token):
    return conn.execute("select auth.verify(%s)", [token]).fetchone()[0]


def add_key(conn, kid, alg, text):
    conn.execute("select auth.add_key(%s, %s, %s)", [kid, alg, text])


def assert_rejected(conn, token, reason):
    with raises_sqlstate("28000", invalid(reason)) as caught:
        verify(conn, token)
    return caught


# -- valid tokens -------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_pem_or_secret_key_verifies_exactly_the_claims(keys, admin, app, alg):
    key = keys[0][alg]
    form = "secret" if alg in HMAC_ALGS else "pem"
    add_key(admin, key.kid, alg, key.key_text(form))
    payload = rich_claims()
    token = key.sign(payload)
    assert verify(app, token) == payload
    # A token without kid is accepted when this is the only active key.
    token_without_kid = key.sign(payload, kid=None)
    assert verify(app, token_without_kid) == payload


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_jwk_key_verifies_exactly_the_claims(keys, admin, app, alg):
    key = keys[0][alg]
    kid = f"{alg}-jwk"
    add_key(admin, kid, alg, key.key_text("jwk"))
    payload = rich_claims()
    assert verify(app, key.sign(payload, kid=kid)) == payload


@pytest.mark.parametrize("alg", ASYMMETRIC_ALGS)
def test_jwk_with_alg_use_and_kid_members(keys, admin, app, alg):
    key = keys[0][alg]
    jwk = dict(key.public_jwk, alg=alg, use="sig", kid="ignored-by-add-key")
    add_key(admin, f"{alg}-jwk2", alg, json.dumps(jwk))
    payload = claims()
    assert verify(app, key.sign(payload, kid=f"{alg}-jwk2")) == payload


def test_import_jwks_with_rsa_ec_and_ed25519_keys(keys, admin, app):
    made = keys[0]
    jwks = {"keys": [
        dict(made[alg].public_jwk, kid=f"{alg}-jwks", alg=alg, use="sig")
        for alg in ASYMMETRIC_ALGS
    ]}
    count = admin.execute("select auth.import_jwks(%s::jsonb)", [json.dumps(jwks)]).fetchone()[0]
    assert count == len(ASYMMETRIC_ALGS)
    for alg in ASYMMETRIC_ALGS:
        payload = rich_claims()
        assert verify(app, made[alg].sign(payload, kid=f"{alg}-jwks")) == payload, alg
    published = app.execute("select auth.jwks()").fetchone()[0]
    assert sorted(k["kid"] for k in published["keys"]) == sorted(f"{a}-jwks" for a in ASYMMETRIC_ALGS)
    for entry in published["keys"]:
        source = made[entry["alg"]].public_jwk
        for member in ("kty", "crv", "n", "e", "x", "y"):
            assert entry.get(member) == source.get(member), (entry["kid"], member)


def test_import_jwks_without_alg_infers_rs256_es256_es384_eddsa(keys, admin, app):
    made = keys[0]
    algs = ("RS256", "ES256", "ES384", "EdDSA")
    jwks = {"keys": [dict(made[alg].public_jwk, kid=f"{alg}-noalg") for alg in algs]}
    count = admin.execute("select auth.import_jwks(%s::jsonb)", [json.dumps(jwks)]).fetchone()[0]
    assert count == len(algs)
    for alg in algs:
        payload = claims()
        assert verify(app, made[alg].sign(payload, kid=f"{alg}-noalg")) == payload
    # An RSA JWK without "alg" is RS256: a PS256 token for it is an algorithm mismatch.
    assert_rejected(app, made["RS256"].sign(claims(), kid="RS256-noalg", alg="PS256"),
                    "algorithm mismatch")


def test_all_algorithms_side_by_side(keys, admin, app):
    """All twelve keys at once; each token is checked against its own key only."""
    made = keys[0]
    for alg in ALL_ALGS:
        form = "secret" if alg in HMAC_ALGS else "pem"
        add_key(admin, made[alg].kid, alg, made[alg].key_text(form))
    for alg in ALL_ALGS:
        payload = claims(alg_used=alg)
        assert verify(app, made[alg].sign(payload)) == payload
    # Without kid and with twelve active keys, no key can be chosen.
    assert_rejected(app, made["HS256"].sign(claims(), kid=None), "unknown key")


# -- tampered tokens ----------------------------------------------------------------------


def _add_main(keys, admin, alg):
    key = keys[0][alg]
    form = "secret" if alg in HMAC_ALGS else "pem"
    add_key(admin, key.kid, alg, key.key_text(form))
    return key


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_payload_changed_and_reencoded_is_bad_signature(keys, admin, app, alg):
    key = _add_main(keys, admin, alg)
    token = key.sign(claims(role="authenticated"))
    h, p, s = token.split(".")
    forged = json.loads(b64url_decode(p))
    forged["role"] = "service_role"
    assert_rejected(app, f"{h}.{json_b64(forged)}.{s}", "bad signature")
    # Same claims, only re-serialised differently: still not what was signed.
    respaced = b64url(json.dumps(json.loads(b64url_decode(p)), indent=1).encode())
    assert_rejected(app, f"{h}.{respaced}.{s}", "bad signature")


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_header_changed_is_bad_signature(keys, admin, app, alg):
    key = _add_main(keys, admin, alg)
    token = key.sign(claims())
    h, p, s = token.split(".")
    header = json.loads(b64url_decode(h))
    header["typ"] = "at+jwt"
    assert_rejected(app, f"{json_b64(header)}.{p}.{s}", "bad signature")
    header = json.loads(b64url_decode(h))
    header["x-extra"] = 1
    assert_rejected(app, f"{json_b64(header)}.{p}.{s}", "bad signature")


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_signature_bit_flipped_is_bad_signature(keys, admin, app, alg):
    key = _add_main(keys, admin, alg)
    token = key.sign(claims())
    h, p, s = token.split(".")
    signature = bytearray(b64url_decode(s))
    for position in (0, len(signature) // 2, len(signature) - 1):
        flipped = bytearray(signature)
        flipped[position] ^= 0x01
        assert_rejected(app, f"{h}.{p}.{b64url(bytes(flipped))}", "bad signature")
    # Truncated and extended signatures, too.
    assert_rejected(app, f"{h}.{p}.{b64url(bytes(signature[:-1]))}", "bad signature")
    extended = b64url(bytes(signature) + bytes(1))
    assert_rejected(app, f"{h}.{p}.{extended}", "bad signature")


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_signature_of_another_key_is_bad_signature(keys, admin, app, alg):
    _add_main(keys, admin, alg)
    other = keys[1][alg]  # same alg, same kid, different key material
    assert_rejected(app, other.sign(claims()), "bad signature")


@pytest.mark.parametrize("alg", ASYMMETRIC_ALGS)
def test_hs256_signed_with_the_public_key_is_algorithm_mismatch(keys, admin, app, alg):
    """Algorithm confusion: an attacker signs HS256 with the (public) key text as secret."""
    key = _add_main(keys, admin, alg)
    payload = claims(role="service_role")
    for secret in (key.public_pem, key.public_pem.strip(), json.dumps(key.public_jwk)):
        for hs, hash_name in (("HS256", "sha256"), ("HS384", "sha384"), ("HS512", "sha512")):
            forged = hmac_token({"alg": hs, "typ": "JWT", "kid": key.kid}, payload,
                                secret.encode(), hash_name)
            assert_rejected(app, forged, "algorithm mismatch")
            # The only active key is also chosen for a token without kid: still a mismatch.
            forged = hmac_token({"alg": hs, "typ": "JWT"}, payload, secret.encode(), hash_name)
            assert_rejected(app, forged, "algorithm mismatch")


@pytest.mark.parametrize("alg", ASYMMETRIC_ALGS)
def test_public_pem_is_refused_as_an_hmac_secret(keys, admin, alg):
    """The other half of algorithm confusion: the public key text cannot be registered as an
    HMAC secret (it is longer than any minimum, so only a rule against PEM text stops it)."""
    key = keys[0][alg]
    for hs in HMAC_ALGS:
        for text in (key.public_pem, key.public_pem.strip(), "\n" + key.public_pem):
            with raises_sqlstate("22023"):
                add_key(admin, f"{alg}-as-{hs}", hs, text)
    assert admin.execute("select count(*) from auth.keys").fetchone()[0] == 0


@pytest.mark.parametrize("alg", RSA_ALGS)
def test_other_rsa_algorithm_with_the_same_key_is_algorithm_mismatch(keys, admin, app, alg):
    key = _add_main(keys, admin, alg)
    for other in RSA_ALGS:
        if other != alg:
            assert_rejected(app, key.sign(claims(), alg=other), "algorithm mismatch")


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256", "EdDSA"])
def test_alg_none(keys, admin, app, alg):
    key = _add_main(keys, admin, alg)
    valid = key.sign(claims())
    _, payload, signature = split(valid)
    forged_payload = dict(payload, role="service_role")
    for name in ("none", "None", "NONE", "nOnE"):
        header = {"alg": name, "typ": "JWT", "kid": key.kid}
        # Unsecured JWS: empty signature. The empty part alone makes the token malformed.
        assert_rejected(app, assemble(header, forged_payload, ""), "malformed")
        # With a signature part (the original one, or garbage), the algorithm is refused.
        assert_rejected(app, assemble(header, forged_payload, signature), "unsupported algorithm")
        assert_rejected(app, assemble(header, payload, b"\x00"), "unsupported algorithm")
        # Without kid as well.
        assert_rejected(app, assemble({"alg": name}, forged_payload, b"x"), "unsupported algorithm")


def test_pyjwt_accepts_what_the_extension_accepts(keys, admin, app):
    """Sanity check of the helpers: PyJWT itself verifies the tokens used above."""
    import jwt

    for alg in ALL_ALGS:
        key = keys[0][alg]
        token = key.sign(claims())
        verifying = key.private if alg in HMAC_ALGS else key.private.public_key()
        jwt.decode(token, verifying, algorithms=[alg], options={"verify_aud": False})
