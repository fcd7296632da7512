#!/usr/bin/env python3
"""Writes the token and key fixtures of the pg_regress files to fixtures.psql, which each
file in sql/ includes (scripts/regress.sh runs pg_regress from the repository root).

The regress files are golden files, so their tokens are fixed: valid ones expire in 2100,
expired ones in 2001. Run this only to change the fixtures, then re-record the expected
output (`cargo pgrx regress pg15 --auto`) and review the diff.
"""
import base64
import json
import pathlib

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

HS_SECRET = "regress-hmac-secret-0123456789-abcdef"
FAR_FUTURE = 4102444800  # 2100-01-01
PAST = 1000000000  # 2001-09-09
FIXTURES = pathlib.Path(__file__).parent / "fixtures.psql"
HEADER = "-- Token and key fixtures of the pg_regress files, written by generate.py. Do not edit.\n"
SUB = "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40"
OTHER_SUB = "7d2e9c14-6b3a-4f58-9e01-3c8a5b6d7e2f"
REV_SUB = "c0ffee00-1111-4222-8333-444455556666"
REV_OTHER_SUB = "decade00-1111-4222-8333-444455556666"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hs(claims, kid="regress-hs", alg="HS256", headers=None, secret=HS_SECRET):
    header = {"kid": kid} if kid else {}
    header.update(headers or {})
    return jwt.encode(claims, secret, algorithm=alg, headers=header)


def raw(header: dict, payload: str, secret=HS_SECRET) -> str:
    import hashlib
    import hmac

    signing_input = b64(json.dumps(header).encode()) + "." + b64(payload.encode())
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)


def pem(public_key) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def main():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    p384_key = ec.generate_private_key(ec.SECP384R1())
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)

    valid = {"sub": SUB, "role": "authenticated", "email": "ada@example.com", "exp": FAR_FUTURE}
    fixtures = {
        "hs_secret": HS_SECRET,
        "rsa_pem": pem(rsa_key.public_key()),
        "ec_pem": pem(ec_key.public_key()),
        "ed_pem": pem(ed_key.public_key()),
        "p384_pem": pem(p384_key.public_key()),
        "rsa1024_pem": pem(small_rsa.public_key()),
        "ed_jwk": json.dumps(json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(ed_key.public_key()))),
        "valid": hs(valid),
        "valid_other": hs({**valid, "sub": OTHER_SUB, "email": "bob@example.com"}),
        "no_kid": hs(valid, kid=None),
        "rs256": jwt.encode(valid, rsa_key, algorithm="RS256", headers={"kid": "regress-rs"}),
        "es256": jwt.encode(valid, ec_key, algorithm="ES256", headers={"kid": "regress-es"}),
        "eddsa": jwt.encode(valid, ed_key, algorithm="EdDSA", headers={"kid": "regress-ed"}),
        "expired": hs({**valid, "exp": PAST}),
        "no_exp": hs({"sub": SUB}),
        "not_yet": hs({**valid, "nbf": FAR_FUTURE - 10}),
        "future_iat": hs({**valid, "iat": FAR_FUTURE - 10}),
        "exp_string": raw({"alg": "HS256", "kid": "regress-hs"}, json.dumps({**valid, "exp": "never"})),
        "aud_number": hs({**valid, "aud": 123}),
        "iss_object": raw({"alg": "HS256", "kid": "regress-hs"}, json.dumps({**valid, "iss": {}})),
        "with_iss_aud": hs({**valid, "iss": "https://issuer.example", "aud": ["web", "api"]}),
        "wrong_iss": hs({**valid, "iss": "https://evil.example", "aud": "api"}),
        "nul_claim": raw({"alg": "HS256", "kid": "regress-hs"}, json.dumps({**valid, "name": "a\u0000b"})),
        "alg_none": b64(b'{"alg":"none","kid":"regress-hs"}') + "." + b64(json.dumps(valid).encode()) + ".",
        "alg_none_sig": b64(b'{"alg":"none","kid":"regress-hs"}') + "." + b64(json.dumps(valid).encode()) + ".AAAA",
        "unknown_kid": hs(valid, kid="nobody"),
        "mismatch": hs(valid, kid="regress-rs"),
        # HS256 keyed with the RSA public key's PEM text: the classic algorithm confusion.
        "confused": raw({"alg": "HS256", "kid": "regress-rs"}, json.dumps(valid), pem(rsa_key.public_key())),
        "jku": hs(valid, headers={"jku": "https://attacker.example/jwks.json"}),
        "crit": hs(valid, headers={"crit": ["exp"]}),
        "embedded_jwk": hs(valid, headers={"jwk": {"kty": "oct", "k": "AAAA"}}),
        "bad_sig": hs(valid, secret=HS_SECRET + "-other"),
        "alice": hs({**valid, "session_id": "5e7c2b1a-9d3f-4e8a-b6c4-1f2e3d4c5b6a"}),
        "bob": hs({**valid, "sub": OTHER_SUB, "email": "bob@example.com"}),
        "anon": hs({"role": "anon", "exp": FAR_FUTURE}),
        "no_role": hs({"sub": SUB, "exp": FAR_FUTURE}),
        "role_postgres": hs({**valid, "role": "postgres"}),
        "role_empty": hs({**valid, "role": ""}),
        "role_quoted": hs({**valid, "role": '"authenticated"'}),
        "role_unknown": hs({**valid, "role": "no_such_role"}),
        "role_number": hs({**valid, "role": 5}),
        "non_uuid_sub": hs({**valid, "sub": "auth0|12345"}),
        # Revocation: three sessions of one user (issued in 2023), one token without session.
        "rev_a1": hs({**valid, "sub": REV_SUB, "iat": 1700000000, "session_id": "a1a1a1a1-0000-4000-8000-000000000001"}),
        "rev_a2": hs({**valid, "sub": REV_SUB, "iat": 1700000000, "session_id": "a2a2a2a2-0000-4000-8000-000000000002"}),
        "rev_a3": hs({**valid, "sub": REV_SUB, "iat": 1700000000, "sid": "a3a3a3a3-0000-4000-8000-000000000003"}),
        "rev_a_jti": hs({**valid, "sub": REV_SUB, "iat": 1700000000, "jti": "regress-jti-1"}),
        "rev_a_no_iat": hs({**valid, "sub": REV_SUB, "session_id": "a4a4a4a4-0000-4000-8000-000000000004"}),
        "rev_b1": hs({**valid, "sub": REV_OTHER_SUB, "iat": 1700000000, "session_id": "b1b1b1b1-0000-4000-8000-000000000001"}),
        "rev_b_jti": hs({**valid, "sub": REV_OTHER_SUB, "iat": 1700000000, "jti": "regress-jti-2"}),
        "duplicate_sub": raw({"alg": "HS256", "kid": "regress-hs"},
                             '{"sub":"first","sub":"%s","exp":%d}' % (SUB, FAR_FUTURE)),
    }
    lines = [f"\\set {name} {sql_literal(value)}" for name, value in fixtures.items()]
    FIXTURES.write_text(HEADER + "\n".join(lines) + "\n")
    print(f"wrote {FIXTURES}")


def sql_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


if __name__ == "__main__":
    main()
