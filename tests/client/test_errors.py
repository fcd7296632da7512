"""Every error the SQL functions raise: each rejection reason with SQLSTATE 28000 and its
exact message, 55000 without an active key, 22023 for unusable keys, the NOTICEs of
auth.import_jwks, the trusted settings (issuer, audience, leeway, max_token_bytes), and a
small deterministic fuzz loop checking that no input ever raises anything else (never
XX000, never 22P05)."""

from __future__ import annotations

import datetime
import json
import random

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from client_support import (
    HMAC_MIN_BYTES,
    assemble,
    b64url,
    b64url_decode,
    claims,
    hmac_token,
    invalid,
    json_b64,
    make_key,
    now,
    private_pem,
    rsa_private,
)
from conftest import APP_USER, KEY_ADMIN, collect_notices, raises_sqlstate

NO_KEY = "no verification key is configured"


@pytest.fixture(scope="module")
def keys():
    return {
        "hs": make_key("HS256", kid="hs"),
        "hs2": make_key("HS256", kid="hs2"),
        "old": make_key("HS256", kid="old"),
        "rs": make_key("RS256", kid="rs"),
        "es": make_key("ES256", kid="es"),
        "es384": make_key("ES384", kid="es384"),
        "ed": make_key("EdDSA", kid="ed"),
        "rsa1024": rsa_private(1024),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "ed448": ed448.Ed448PrivateKey.generate(),
    }


@pytest.fixture
def admin(pg):
    return pg.connect(KEY_ADMIN)


@pytest.fixture
def app(pg):
    return pg.connect(APP_USER)


@pytest.fixture
def keyring(admin, keys):
    """hs and rs active, old retired."""
    for name in ("hs", "old"):
        admin.execute("select auth.add_key(%s, 'HS256', %s)", [name, keys[name].secret_text])
    admin.execute("select auth.add_key('rs', 'RS256', %s)", [keys["rs"].public_pem])
    admin.execute("select auth.retire_key('old')")
    return keys


def verify(conn, token):
    return conn.execute("select auth.verify(%s)", [token]).fetchone()[0]


def rejected(conn, token, reason):
    with raises_sqlstate("28000", invalid(reason)) as caught:
        verify(conn, token)
    assert caught.detail, "every rejection has a detail"
    return caught


def signed(keys, payload, header=None, name="hs"):
    """A token correctly signed by key `name`, with arbitrary payload bytes/claims."""
    key = keys[name]
    hdr = {"alg": key.alg, "kid": key.kid}
    hdr.update(header or {})
    if key.alg.startswith("HS"):
        return hmac_token(hdr, payload if isinstance(payload, (dict, bytes)) else
                          json.dumps(payload).encode(), key.private)
    raise ValueError(name)


# -- every rejection reason ------------------------------------------------------------------


BAD_UTF8_HEADER = b'{"alg":"HS256","kid":"\xff"}'
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def malformed_cases(keys):
    hs = keys["hs"]
    good = hs.sign(claims())
    h, p, s = good.split(".")
    header = json.loads(b64url_decode(h))
    return {
        "empty": "",
        "one part": "abc",
        "two parts": f"{h}.{p}",
        "four parts": f"{good}.{s}",
        "five parts": f"{good}.{p}.{s}",
        "trailing dot": good + ".",
        "only dots": "..",
        "empty header": f".{p}.{s}",
        "empty payload": f"{h}..{s}",
        "empty signature": f"{h}.{p}.",
        "padded header": f"{h}==.{p}.{s}" if len(h) % 4 else f"{h}=.{p}.{s}",
        "padded signature": f"{h}.{p}.{s}=",
        "standard base64 alphabet": f"{h}.{p}.{s.replace('-', '+').replace('_', '/')}+/",
        "space": f"{h}.{p}.{s} ",
        "newline": f"{h}\n.{p}.{s}",
        # The last character of a 32-byte signature carries 2 unused bits, which must be 0.
        "non-canonical trailing bits": f"{h}.{p}.{s[:-1]}{ALPHABET[ALPHABET.index(s[-1]) | 1]}",
        "header not JSON": f"{b64url(b'not json')}.{p}.{s}",
        "header JSON array": f"{json_b64([header])}.{p}.{s}",
        "header JSON string": f"{json_b64('HS256')}.{p}.{s}",
        "header without alg": f"{json_b64({'kid': 'hs'})}.{p}.{s}",
        "alg not a string": f"{json_b64({'alg': 256, 'kid': 'hs'})}.{p}.{s}",
        "alg null": f"{json_b64({'alg': None, 'kid': 'hs'})}.{p}.{s}",
        "kid not a string": f"{json_b64({'alg': 'HS256', 'kid': 1})}.{p}.{s}",
        "header invalid UTF-8": f"{b64url(BAD_UTF8_HEADER)}.{p}.{s}",
        "payload with plus": f"{h}.{p[:5]}+{p[5:]}.{s}",
        # Correctly signed, but the payload is no JSON object.
        "payload not JSON": signed(keys, b"not json"),
        "payload JSON array": signed(keys, b"[1,2]"),
        "payload JSON string": signed(keys, b'"claims"'),
        "payload JSON null": signed(keys, b"null"),
        "payload trailing garbage": signed(keys, json.dumps(claims()).encode() + b"x"),
        "payload invalid UTF-8": signed(keys, b'{"sub":"\xff","exp":9999999999}'),
        "payload number out of range": signed(keys, b'{"exp":1e400}'),
        # NUL characters, which a jsonb cannot hold: rejected as malformed, not 22P05.
        "NUL in a claim value": signed(keys, claims(sub="a\u0000b")),
        "NUL in a claim name": signed(keys, dict(claims(), **{"x\u0000": 1})),
        "NUL nested": signed(keys, claims(meta={"list": ["ok", {"deep": "\u0000"}]})),
        "NUL alone": signed(keys, claims(sub="\u0000")),
    }


@pytest.mark.parametrize("case", list(malformed_cases({"hs": make_key("HS256", kid="hs")})))
def test_malformed(keyring, app, case):
    token = malformed_cases(keyring)[case]
    rejected(app, token, "malformed")


def test_nul_is_malformed_with_a_detail_that_says_so(keyring, app):
    caught = rejected(app, signed(keyring, claims(sub="a\u0000b")), "malformed")
    assert "NUL" in caught.detail


def test_too_large(keyring, app):
    caught = rejected(app, "A" * 8193, "too large")
    assert caught.detail == "The token is 8193 bytes; pg_session_auth.max_token_bytes is 8192."
    rejected(app, keyring["hs"].sign(claims(pad="x" * 9000)), "too large")
    # Multi-byte characters count in bytes.
    rejected(app, "é" * 4097, "too large")


@pytest.mark.parametrize("alg", ["HS1", "hs256", "Hs256", "HS256 ", "none", "ES512", "RS1", "%s%n",
                                 "", "ES256K", "ed25519", "RSA-OAEP", "dir"])
def test_unsupported_algorithm(keyring, app, alg):
    token = assemble({"alg": alg, "kid": "hs"}, claims(), b"signature")
    rejected(app, token, "unsupported algorithm")


def test_a_nul_character_in_the_header_is_malformed(keyring, app):
    # jsonb cannot hold U+0000, and a name that compares equal up to it is a trap: refused
    # before the algorithm or key is looked at.
    token = assemble({"alg": "EdDSA\u0000", "kid": "hs"}, claims(), b"signature")
    rejected(app, token, "malformed")
    rejected(app, keyring["hs"].sign(claims(), kid="h\u0000s"), "malformed")


def test_unsupported_algorithm_es512_signed_by_pyjwt(keyring, app):
    import jwt

    token = jwt.encode(claims(), keyring["p521"], algorithm="ES512", headers={"kid": "hs"})
    rejected(app, token, "unsupported algorithm")


def test_unknown_key(keyring, app):
    caught = rejected(app, keyring["hs"].sign(claims(), kid="nope"), "unknown key")
    assert caught.hint
    # No kid and two active keys: no key can be chosen.
    rejected(app, keyring["hs"].sign(claims(), kid=None), "unknown key")
    # A kid with control characters is just another unknown kid.
    rejected(app, keyring["hs"].sign(claims(), kid="hs\n"), "unknown key")
    rejected(app, keyring["hs"].sign(claims(), kid="x" * 5000), "unknown key")
    # printf-style text in a kid is data, nothing else.
    caught = rejected(app, keyring["hs"].sign(claims(), kid="%s%n%s%n%x"), "unknown key")
    assert "%s%n%s%n%x" in caught.detail


def test_retired_key(keyring, app):
    rejected(app, keyring["old"].sign(claims()), "retired key")


def test_algorithm_mismatch(keyring, app):
    import jwt

    hs = keyring["hs"]
    for alg in ("HS384", "HS512"):
        rejected(app, jwt.encode(claims(), hs.private, algorithm=alg, headers={"kid": "hs"}),
                 "algorithm mismatch")
    rejected(app, keyring["rs"].sign(claims(), kid="hs"), "algorithm mismatch")
    rejected(app, hs.sign(claims(), kid="rs"), "algorithm mismatch")
    rejected(app, keyring["rs"].sign(claims(), alg="PS256"), "algorithm mismatch")


@pytest.mark.parametrize("member", ["crit", "jwk", "jku", "x5u", "x5c", "enc", "zip"])
def test_forbidden_header(keyring, app, member):
    values = {"crit": ["exp"], "jwk": {"kty": "oct", "k": "AAAA"},
              "jku": "https://evil.example/jwks", "x5u": "https://evil.example/cert",
              "x5c": ["MIIB"], "enc": "A128GCM", "zip": "DEF"}
    token = signed(keyring, claims(), header={member: values[member]})
    caught = rejected(app, token, "forbidden header")
    assert member in caught.detail


def test_bad_signature(keyring, app):
    token = keyring["hs"].sign(claims())
    h, p, _ = token.split(".")
    rejected(app, f"{h}.{p}.{b64url(bytes(32))}", "bad signature")
    rejected(app, keyring["hs2"].sign(claims(), kid="hs"), "bad signature")


def test_time_claims(keyring, app):
    hs = keyring["hs"]
    t = now()
    rejected(app, hs.sign(claims(exp=t - 1000)), "expired")
    rejected(app, hs.sign(claims(exp=0)), "expired")
    rejected(app, hs.sign(claims(exp=-1e300)), "expired")
    rejected(app, hs.sign(claims(nbf=t + 1000)), "not yet valid")
    rejected(app, hs.sign(claims(nbf=1e300, exp=1e300)), "not yet valid")
    rejected(app, hs.sign(claims(iat=t + 1000)), "issued in the future")
    # Huge but valid times are accepted (1e300 comes back as the integer jsonb holds).
    payload = claims(exp=1e300, iat=0, nbf=-5)
    assert verify(app, hs.sign(payload)) == dict(payload, exp=10**300)


def test_missing_exp(keyring, app):
    payload = claims()
    del payload["exp"]
    caught = rejected(app, keyring["hs"].sign(payload), "missing claim")
    assert "exp" in caught.detail
    rejected(app, keyring["hs"].sign({}), "missing claim")


@pytest.mark.parametrize("name,value", [
    ("exp", "never"), ("exp", True), ("exp", None), ("exp", [1]), ("exp", {"t": 1}),
    ("exp", "9999999999"),
    ("nbf", "yesterday"), ("nbf", False), ("iat", []), ("iat", "0"),
    ("iss", 1), ("iss", ["a"]), ("iss", None),
    ("sub", 42), ("sub", {"id": 1}),
    ("jti", 7), ("aud", 1), ("aud", [1]), ("aud", ["a", None]), ("aud", {"a": 1}),
    ("aud", None),
])
def test_invalid_claim_type(keyring, app, name, value):
    payload = claims(**{name: value})
    # Signed by hand: PyJWT refuses to encode some of these.
    rejected(app, signed(keyring, payload), "invalid claim type")


def test_null_token_is_rejected(keyring, app):
    caught = rejected(app, None, "malformed")
    assert caught.detail == "The token is NULL."
    with raises_sqlstate("28000", invalid("malformed")):
        app.execute("select auth.verify(null::text)")


# -- no key ----------------------------------------------------------------------------------


def test_no_key_configured(pg, app, admin, keys):
    hs = keys["hs"]
    token = hs.sign(claims())
    for t in (token, hs.sign(claims(), kid=None), hs.sign(claims(), kid="whatever")):
        with raises_sqlstate("55000", NO_KEY) as caught:
            verify(app, t)
        assert caught.hint
    # The structure is checked first: garbage is malformed even without keys.
    rejected(app, "garbage", "malformed")
    rejected(app, "A" * 9000, "too large")
    # Only retired keys: the same, except for the retired key's own kid.
    admin.execute("select auth.add_key('hs', 'HS256', %s)", [hs.secret_text])
    assert verify(app, token)
    admin.execute("select auth.retire_key('hs')")
    rejected(app, token, "retired key")
    for t in (hs.sign(claims(), kid=None), hs.sign(claims(), kid="whatever")):
        with raises_sqlstate("55000", NO_KEY):
            verify(app, t)


# -- unusable keys ---------------------------------------------------------------------------


def _cert_pem(private) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    start = datetime.datetime(2020, 1, 1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(private.public_key()).serial_number(1)
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
            .sign(private, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _pub_pem(private) -> str:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def bad_key_cases(keys):
    rs, es, es384, ed = keys["rs"], keys["es"], keys["es384"], keys["ed"]
    rsa1024_jwk = RSAAlgorithm.to_jwk(keys["rsa1024"].public_key(), as_dict=True)
    cases = {}
    for alg, minimum in HMAC_MIN_BYTES.items():
        cases[f"{alg} secret {minimum - 1} bytes"] = (alg, "s" * (minimum - 1))
        cases[f"{alg} JWK secret {minimum - 1} bytes"] = (
            alg, json.dumps({"kty": "oct", "k": b64url(b"s" * (minimum - 1))}))
    cases.update({
        "HS256 empty secret": ("HS256", ""),
        "HS512 secret of 32 multi-byte chars < 64 bytes": ("HS512", "é" * 31),
        "RS256 1024-bit PEM": ("RS256", _pub_pem(keys["rsa1024"])),
        "PS512 1024-bit PEM": ("PS512", _pub_pem(keys["rsa1024"])),
        "RS256 1024-bit JWK": ("RS256", json.dumps(rsa1024_jwk)),
        "RS256 1024-bit PKCS#1 PEM": ("RS256", keys["rsa1024"].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1).decode()),
        "ES256 with a P-384 PEM": ("ES256", es384.public_pem),
        "ES256 with a P-384 JWK": ("ES256", json.dumps(es384.public_jwk)),
        "ES384 with a P-256 PEM": ("ES384", es.public_pem),
        "ES256 with a P-521 PEM": ("ES256", _pub_pem(keys["p521"])),
        "ES256 with an RSA PEM": ("ES256", rs.public_pem),
        "RS256 with an EC PEM": ("RS256", es.public_pem),
        "EdDSA with an EC PEM": ("EdDSA", es.public_pem),
        "ES256 with an Ed25519 PEM": ("ES256", ed.public_pem),
        "EdDSA with an Ed448 PEM": ("EdDSA", _pub_pem(keys["ed448"])),
        "EdDSA with an Ed448 JWK": ("EdDSA", json.dumps(
            OKPAlgorithm.to_jwk(keys["ed448"].public_key(), as_dict=True))),
        "RS256 with a secret": ("RS256", "s" * 64),
        "HS256 with a JWK of an RSA key": ("HS256", json.dumps(rs.public_jwk)),
        "RS256 private PEM (PKCS#8)": ("RS256", private_pem(rs)),
        "RS256 private PEM (PKCS#1)": ("RS256", rs.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()).decode()),
        "ES256 private PEM": ("ES256", private_pem(es)),
        "ES256 private PEM (SEC1)": ("ES256", es.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()).decode()),
        "EdDSA private PEM": ("EdDSA", private_pem(ed)),
        "ES256 private JWK": ("ES256", json.dumps(
            ECAlgorithm.to_jwk(es.private, as_dict=True) | {"key_ops": ["verify"]})),
        "RS256 certificate": ("RS256", _cert_pem(rs.private)),
        "RS256 JWK use enc": ("RS256", json.dumps(dict(rs.public_jwk, use="enc"))),
        "ES256 JWK use enc": ("ES256", json.dumps(dict(es.public_jwk, use="enc"))),
        "HS256 JWK use enc": ("HS256", json.dumps({"kty": "oct", "use": "enc",
                                                   "k": b64url(b"s" * 32)})),
        "RS256 JWK key_ops encrypt": ("RS256", json.dumps(dict(rs.public_jwk,
                                                               key_ops=["encrypt"]))),
        "RS256 JWK declared PS256": ("RS256", json.dumps(dict(rs.public_jwk, alg="PS256"))),
        "RS256 JWK without n": ("RS256", json.dumps({"kty": "RSA", "e": "AQAB"})),
        "ES256 JWK point off the curve": ("ES256", json.dumps(dict(
            es.public_jwk, y=b64url(bytes(31) + b"\x01")))),
        "EdDSA JWK short x": ("EdDSA", json.dumps({"kty": "OKP", "crv": "Ed25519",
                                                   "x": b64url(bytes(16))})),
        "EdDSA JWK small-order point": ("EdDSA", json.dumps({"kty": "OKP", "crv": "Ed25519",
                                                             "x": b64url(bytes(32))})),
        "RS256 JWK padded base64": ("RS256", json.dumps(dict(rs.public_jwk,
                                                             e="AQAB=="))),
        "JWK not JSON": ("RS256", "{not json"),
        "PEM garbage": ("RS256", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"),
        "alg none": ("none", "s" * 64),
        "alg ES512": ("ES512", _pub_pem(keys["p521"])),
        "alg lower case": ("hs256", "s" * 64),
        "alg empty": ("", "s" * 64),
        "alg RS1": ("RS1", rs.public_pem),
        # A public key must never become an HMAC secret, however it is disguised.
        "HS256 PEM after a byte-order mark": ("HS256", "\ufeff" + rs.public_pem),
        "HS256 PEM after blank lines": ("HS256", "\r\n\n" + rs.public_pem),
        "HS256 oct JWK whose k is a PEM": ("HS256", json.dumps(
            {"kty": "oct", "k": b64url(rs.public_pem.encode())})),
        "HS256 JWK text as the secret": ("HS256", "\ufeff" + json.dumps(rs.public_jwk)),
        "HS256 JWKS text as the secret": ("HS256", json.dumps({"keys": [rs.public_jwk]})),
    })
    return cases


def test_unusable_keys_raise_22023(admin, keys, pg):
    failures = []
    for case, (alg, text) in bad_key_cases(keys).items():
        try:
            with raises_sqlstate("22023"):
                admin.execute("select auth.add_key('bad', %s, %s)", [alg, text])
        except AssertionError as error:
            failures.append(f"{case}: {error}")
    assert not failures, "\n".join(failures)
    assert pg.sql("select count(*) from auth.keys")[0][0] == 0


@pytest.mark.parametrize("kid", ["", "x" * 257, "a\nb", "tab\there", "\u0085", "é" * 129])
def test_unusable_kid_raises_22023(admin, keys, kid):
    with raises_sqlstate("22023"):
        admin.execute("select auth.add_key(%s, 'HS256', %s)", [kid, keys["hs"].secret_text])


def test_unusable_key_messages(admin, keys):
    with raises_sqlstate("22023", 'unsupported algorithm "none"') as caught:
        admin.execute("select auth.add_key('k', 'none', 'x')")
    assert "HS256" in caught.detail and "EdDSA" in caught.detail
    with raises_sqlstate(
        "22023", "unusable key: HS256 needs a secret of at least 32 bytes; the one given has 31"
    ):
        admin.execute("select auth.add_key('k', 'HS256', %s)", ["s" * 31])
    with raises_sqlstate(
        "22023", "unusable key: RSA keys must be 2048 to 4096 bits; the one given has 1024 bits"
    ):
        admin.execute("select auth.add_key('k', 'RS256', %s)", [_pub_pem(keys["rsa1024"])])
    with raises_sqlstate(
        "22023", "unusable key: the key contains private key material; give the public key only"
    ):
        admin.execute("select auth.add_key('k', 'ES256', %s)", [private_pem(keys["es"])])


def test_minimum_hmac_secrets_are_accepted(admin, app):
    import jwt

    for alg, minimum in HMAC_MIN_BYTES.items():
        secret = "m" * minimum
        admin.execute("select auth.add_key(%s, %s, %s)", [alg, alg, secret])
        payload = claims()
        token = jwt.encode(payload, secret, algorithm=alg, headers={"kid": alg})
        assert verify(app, token) == payload


def test_bad_jwks_documents_raise_22023(admin, keys):
    for document in ({}, {"keys": {}}, {"keys": "x"}, [], "keys", 1,
                     {"keys": [dict(keys["rs"].public_jwk, kid=f"k{i}") for i in range(101)]}):
        with raises_sqlstate("22023"):
            admin.execute("select auth.import_jwks(%s::jsonb)", [json.dumps(document)])
    with raises_sqlstate("22004"):
        admin.execute("select auth.import_jwks(null)")


# -- import_jwks NOTICEs ---------------------------------------------------------------------


def test_import_jwks_counts_and_notices(admin, app, keys):
    rs, es, ed = keys["rs"], keys["es"], keys["ed"]
    p521 = ECAlgorithm.to_jwk(keys["p521"].public_key(), as_dict=True)
    ed448 = OKPAlgorithm.to_jwk(keys["ed448"].public_key(), as_dict=True)
    document = {"keys": [
        dict(rs.public_jwk, kid="rsa", alg="RS256"),        # 0 imported
        dict(es.public_jwk, kid="ec"),                      # 1 imported
        dict(ed.public_jwk, kid="ed", use="sig"),           # 2 imported
        dict(rs.public_jwk),                                # 3 no kid
        dict(es.public_jwk, kid="enc", use="enc"),          # 4 use enc
        {"kty": "oct", "kid": "oct", "k": b64url(b"s" * 64), "alg": "HS256"},  # 5 oct
        dict(p521, kid="p521"),                             # 6 unsupported curve
        dict(ed448, kid="ed448"),                           # 7 unsupported curve
        dict(es.public_jwk, kid="dup"),                     # 8 duplicate kid
        dict(ed.public_jwk, kid="dup"),                     # 9 duplicate kid
        "not an object",                                    # 10
        dict(rs.public_jwk, kid="es512", alg="ES512"),      # 11 unsupported alg
        dict(rs.public_jwk, kid=""),                        # 12 empty kid
        dict(rs.public_jwk, kid=5),                         # 13 kid not a string
        {"kty": "RSA", "kid": "small", "n": b64url(bytes([0xc5]) + bytes(127)), "e": "AQAB"},
        dict(p521, kid="p521-es256", alg="ES256"),          # 15 unsupported curve
    ]}
    notices = collect_notices(admin)
    count = admin.execute("select auth.import_jwks(%s::jsonb)", [json.dumps(document)]).fetchone()[0]
    assert count == 3
    skipped = {int(n.message_primary.split("#")[1].split(" ")[0]): n.message_primary
               for n in notices}
    assert sorted(skipped) == list(range(3, 16)), [n.message_primary for n in notices]
    assert all(n.severity_nonlocalized == "NOTICE" for n in notices)
    assert skipped[3].startswith("skipped key #3 (without kid): ")
    assert skipped[4].startswith('skipped key #4 (kid "enc"): ') and "enc" in skipped[4]
    assert skipped[5].startswith('skipped key #5 (kid "oct"): ') and "symmetric" in skipped[5]
    assert 'unsupported curve "P-521"' in skipped[6]
    assert 'unsupported curve "Ed448"' in skipped[7]
    assert 'unsupported curve "P-521"' in skipped[15]
    assert "more than once" in skipped[8] and "more than once" in skipped[9]
    assert "(without kid)" in skipped[10]
    assert "ES512" in skipped[11]
    assert "2048" in skipped[14]
    # What was imported works; nothing skipped was stored.
    stored = admin.execute("select kid from auth.keys order by kid").fetchall()
    assert [r[0] for r in stored] == ["ec", "ed", "rsa"]
    assert verify(app, rs.sign(claims(), kid="rsa"))
    assert verify(app, es.sign(claims(), kid="ec"))
    assert verify(app, ed.sign(claims(), kid="ed"))
    # Importing again replaces (and counts) the same keys.
    assert admin.execute("select auth.import_jwks(%s::jsonb)",
                         [json.dumps(document)]).fetchone()[0] == 3
    assert admin.execute("select count(*) from auth.keys").fetchone()[0] == 3
    assert admin.execute("select auth.import_jwks('{\"keys\": []}')").fetchone()[0] == 0


def test_hand_written_rows_that_do_not_parse_are_ignored(pg, app, keys):
    """Rows written into auth.keys by hand (by its owner) that are not usable keys are left
    out of the keyring with a WARNING: their tokens fail as 'unknown key', never XX000."""
    su = pg.connect()
    su.execute("select auth.add_key('hs', 'HS256', %s)", [keys["hs"].secret_text])
    su.execute("""insert into auth.keys (kid, alg, secret, public_jwk) values
        ('short', 'HS256', '\\x0102', null),
        ('rsa-garbage', 'RS256', null, '{"kty": "RSA", "n": "AQAB", "e": "AQAB"}'),
        ('not-an-object', 'ES256', null, '[1, 2]'),
        ('wrong-kind', 'EdDSA', null, '{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}')""")
    notices = collect_notices(app)
    for kid in ("short", "rsa-garbage", "not-an-object", "wrong-kind"):
        rejected(app, keys["hs"].sign(claims(), kid=kid), "unknown key")
    warnings = [n.message_primary for n in notices if n.severity_nonlocalized == "WARNING"]
    assert len(warnings) == 4, warnings  # one load, one WARNING per ignored row
    assert verify(app, keys["hs"].sign(claims()))


# -- trusted settings ------------------------------------------------------------------------


def test_issuer_and_audience_from_alter_database(pg, keyring):
    su = pg.connect()
    su.execute("alter database postgres set pg_session_auth.issuer = 'https://issuer.example'")
    su.execute("alter database postgres set pg_session_auth.audience = 'api'")
    app = pg.connect(APP_USER)  # settings of ALTER DATABASE apply to new sessions
    hs = keyring["hs"]
    good = claims(iss="https://issuer.example", aud="api")
    assert verify(app, hs.sign(good)) == good
    also_good = claims(iss="https://issuer.example", aud=["web", "api"])
    assert verify(app, hs.sign(also_good)) == also_good
    for iss in ("https://issuer.example/", "https://ISSUER.example", "https://other.example", ""):
        rejected(app, hs.sign(claims(iss=iss, aud="api")), "wrong issuer")
    for aud in ("web", ["web"], [], "API", "api "):
        rejected(app, hs.sign(claims(iss="https://issuer.example", aud=aud)), "wrong audience")
    caught = rejected(app, hs.sign(claims(aud="api")), "missing claim")
    assert "iss" in caught.detail
    caught = rejected(app, hs.sign(claims(iss="https://issuer.example")), "missing claim")
    assert "aud" in caught.detail
    # Types are checked before values.
    rejected(app, signed(keyring, claims(iss=["https://issuer.example"], aud="api")),
             "invalid claim type")
    # A connection opened before the change keeps its settings; reset, then reconnect.
    su.execute("alter database postgres reset all")
    assert verify(app, hs.sign(good)) == good
    rejected(app, hs.sign(claims(iss="other", aud="api")), "wrong issuer")
    fresh = pg.connect(APP_USER)
    anything = claims(iss="other", aud="else")
    assert verify(fresh, hs.sign(anything)) == anything
    no_iss = claims()
    assert verify(fresh, hs.sign(no_iss)) == no_iss


def test_empty_issuer_setting_means_any(pg, keyring):
    pg.connect().execute("alter database postgres set pg_session_auth.issuer = ''")
    app = pg.connect(APP_USER)
    payload = claims(iss="whatever")
    assert verify(app, keyring["hs"].sign(payload)) == payload


def _boundary(pg, app, keyring, leeway, make_payload, values, expected_ok):
    """Verifies tokens for each value in ONE statement (one statement clock S) and checks
    each outcome against expected_ok(value, S)."""
    hs = keyring["hs"]
    tokens = [hs.sign(make_payload(v)) for v in values]
    row = app.execute(
        "select floor(extract(epoch from statement_timestamp()))::bigint, "
        "array(select public.try_verify(t) from unnest(%s::text[]) with ordinality as u(t, i) "
        "order by i)",
        [tokens],
    ).fetchone()
    server_now, outcomes = row
    seen = set()
    for value, outcome in zip(values, outcomes):
        ok = expected_ok(value, server_now)
        seen.add(ok)
        if ok:
            assert outcome == "ok", (leeway, value, server_now, outcome)
        else:
            assert outcome.startswith("28000 invalid token: "), (value, outcome)
    assert seen == {True, False}, "the values must straddle the boundary"
    return outcomes


@pytest.mark.parametrize("leeway", [None, 0, 5, 3600])
def test_leeway_boundaries(pg, keyring, leeway):
    if leeway is not None:
        pg.connect().execute(f"alter role app_user set pg_session_auth.leeway = {leeway}")
    app = pg.connect(APP_USER)
    effective = 30 if leeway is None else leeway
    shown = app.execute("show pg_session_auth.leeway").fetchone()[0]
    assert shown == {30: "30s", 0: "0", 5: "5s", 3600: "1h"}[effective]
    t = app.execute("select floor(extract(epoch from now()))::bigint").fetchone()[0]
    steps = [x / 2 for x in range(-6, 16)]  # -3 .. +7.5 seconds around the boundary
    # exp: accepted while now < exp + leeway.
    outcomes = _boundary(pg, app, keyring, effective,
                         lambda v: claims(exp=v, iat=t - 7200),
                         [t - effective + d for d in steps],
                         lambda v, s: s < v + effective)
    assert {o for o in outcomes if o != "ok"} == {"28000 invalid token: expired"}
    # nbf: accepted while nbf <= now + leeway.
    outcomes = _boundary(pg, app, keyring, effective,
                         lambda v: claims(nbf=v, iat=t - 7200, exp=t + 7200 + 2 * effective),
                         [t + effective + d for d in steps],
                         lambda v, s: v <= s + effective)
    assert {o for o in outcomes if o != "ok"} == {"28000 invalid token: not yet valid"}
    # iat: accepted while iat <= now + leeway.
    outcomes = _boundary(pg, app, keyring, effective,
                         lambda v: claims(iat=v, exp=t + 7200 + 2 * effective),
                         [t + effective + d for d in steps],
                         lambda v, s: v <= s + effective)
    assert {o for o in outcomes if o != "ok"} == {"28000 invalid token: issued in the future"}


def test_leeway_range_and_superuser_only(pg):
    su = pg.connect()
    for value in ("-1", "3601", "1e9", "abc"):
        with raises_sqlstate("22023"):
            su.execute(f"set pg_session_auth.leeway = '{value}'")
    su.execute("set pg_session_auth.leeway = '2min'")
    assert su.execute("show pg_session_auth.leeway").fetchone()[0] == "2min"
    for value in ("255", "1048577", "2MB"):
        with raises_sqlstate("22023"):
            su.execute(f"set pg_session_auth.max_token_bytes = '{value}'")
    su.execute("set pg_session_auth.max_token_bytes = '1MB'")


def exact_length_token(key, length: int, **claim_overrides) -> str:
    """A valid token of exactly `length` bytes (padding a header member and a claim)."""
    for header_pad in range(0, 8):
        base = key.sign(claims(pad="", **claim_overrides), headers={"p": "h" * header_pad})
        guess = max(0, (length - len(base)) * 3 // 4)
        for pad in range(max(0, guess - 6), guess + 7):
            token = key.sign(claims(pad="y" * pad, **claim_overrides),
                             headers={"p": "h" * header_pad})
            if len(token) == length:
                return token
    raise AssertionError(f"no token of {length} bytes")


def test_max_token_bytes_boundary(pg, keyring):
    hs = keyring["hs"]
    app = pg.connect(APP_USER)
    assert app.execute("show pg_session_auth.max_token_bytes").fetchone()[0] == "8kB"
    token = exact_length_token(hs, 8192)
    assert verify(app, token)["sub"] == "user-42"
    caught = rejected(app, exact_length_token(hs, 8193), "too large")
    assert "8193" in caught.detail
    # Set lower by a superuser, per role.
    pg.connect().execute("alter role app_user set pg_session_auth.max_token_bytes = 300")
    app = pg.connect(APP_USER)
    assert verify(app, exact_length_token(hs, 300))
    caught = rejected(app, exact_length_token(hs, 301), "too large")
    assert caught.detail == "The token is 301 bytes; pg_session_auth.max_token_bytes is 300."
    rejected(app, "x" * 301, "too large")  # before any parsing
    # Higher, for large tokens.
    pg.connect().execute("alter role app_user set pg_session_auth.max_token_bytes = '64kB'")
    app = pg.connect(APP_USER)
    assert verify(app, exact_length_token(hs, 65536))
    rejected(app, exact_length_token(hs, 65537), "too large")


# -- never anything but 28000 / 55000 --------------------------------------------------------



def _random_text(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:  # printable ASCII
        return "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(0, 80)))
    if kind == 1:  # base64url parts and dots
        parts = rng.randrange(1, 6)
        return ".".join("".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 60)))
                        for _ in range(parts))
    if kind == 2:  # any Unicode scalar value but NUL and surrogates
        chars = []
        for _ in range(rng.randrange(1, 40)):
            c = rng.randrange(1, 0x110000)
            if 0xD800 <= c <= 0xDFFF:
                c = 0x41
            chars.append(chr(c))
        return "".join(chars)
    if kind == 3:  # JSON-ish header with random payload bytes
        header = rng.choice([{"alg": "HS256"}, {"alg": "HS256", "kid": "hs"}, {"alg": "none"},
                             {"alg": "RS256", "kid": "rs"}, {"kid": "hs"}, {}, [], "x", 1.5])
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        sig = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 70)))
        return f"{json_b64(header)}.{b64url(payload)}.{b64url(sig)}"
    if kind == 4:  # long
        return rng.choice(ALPHABET) * rng.choice([255, 256, 8191, 8192, 8193, 20000])
    return rng.choice(["", ".", "..", "...", "a.b.c", " ", "null", "{}", "e30.e30.e30",
                       "eyJhbGciOiJIUzI1NiJ9.e30.", "\t\n", "\u00e9.\u00e9.\u00e9"])


def _mutate(rng: random.Random, token: str) -> str:
    chars = list(token)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(7)
        i = rng.randrange(len(chars)) if chars else 0
        if op == 0 and chars:
            chars[i] = rng.choice(ALPHABET + ".=+/ é")
        elif op == 1 and chars:
            del chars[i]
        elif op == 2:
            chars.insert(i, rng.choice(ALPHABET + "."))
        elif op == 3:
            chars = chars[: rng.randrange(len(chars) + 1)]
        elif op == 4:
            parts = "".join(chars).split(".")
            rng.shuffle(parts)
            chars = list(".".join(parts))
        elif op == 5:
            parts = "".join(chars).split(".")
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(parts))
            chars = list(".".join(parts))
        else:
            chars = list("".join(chars).swapcase() if rng.random() < 0.2 else "".join(chars))
    return "".join(chars)


def _random_claims(rng: random.Random):
    values = [None, True, False, 0, -1, 1.5, 2**63, -(2**63), 2**64, 1e308, -1e308,
              "", "x", "\u0000", "é", [], [1], ["api"], {}, {"a": "\u0000"}, now() + 60,
              now() - 60, "9999999999", [None]]
    payload = {}
    for name in rng.sample(["exp", "nbf", "iat", "iss", "aud", "sub", "jti", "role",
                            "x\u0000"], rng.randrange(0, 6)):
        payload[name] = rng.choice(values)
    if rng.random() < 0.5:
        payload["exp"] = now() + 600
    return payload


def test_random_inputs_never_raise_anything_else(pg, keyring, app):
    rng = random.Random(20240615)
    hs, rs = keyring["hs"], keyring["rs"]
    valid = [hs.sign(claims()), rs.sign(claims()), keyring["old"].sign(claims()),
             hs.sign(claims(), kid=None)]
    inputs = [_random_text(rng) for _ in range(300)]
    inputs += [_mutate(rng, rng.choice(valid)) for _ in range(300)]
    inputs += [signed(keyring, _random_claims(rng)) for _ in range(150)]
    inputs += [signed(keyring, bytes(rng.randrange(256) for _ in range(rng.randrange(60))))
               for _ in range(50)]
    unexpected = []
    outcomes = {}
    for token in inputs:
        try:
            app.execute("select auth.verify(%s)", [token])
            outcomes["ok"] = outcomes.get("ok", 0) + 1
        except psycopg.Error as error:
            key = f"{error.sqlstate} {error.diag.message_primary}"
            outcomes[key] = outcomes.get(key, 0) + 1
            if error.sqlstate not in ("28000", "55000"):
                unexpected.append((token[:200], error.sqlstate, str(error)))
            elif error.sqlstate == "28000":
                assert error.diag.message_primary.startswith("invalid token: ")
    assert not unexpected, unexpected[:10]
    # The connection is still fine and the outcomes were varied.
    assert verify(app, valid[0])
    assert len(outcomes) >= 6, outcomes

    # The same with an empty keyring: still only 28000 or 55000.
    pg.connect().execute("delete from auth.keys")
    for token in inputs[::5]:
        try:
            app.execute("select auth.verify(%s)", [token])
            raise AssertionError("accepted without keys")
        except psycopg.Error as error:
            assert error.sqlstate in ("28000", "55000"), (token[:200], str(error))
