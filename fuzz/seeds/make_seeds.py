#!/usr/bin/env python3
"""Writes the seed inputs in seeds/verify_token/ (run once, by hand).

Each seed is: selector byte (algorithm index), key text, NUL, token. Sources: the Wycheproof
JWS vectors (their keys and tokens), and tokens MACed with the fuzz target's fixed secret so
that the claim checks are reached.
"""
import base64
import hashlib
import hmac
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
CORE = HERE.parent.parent / "core"
ALGS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
FIXED = b"fuzz-fixed-secret-0123456789abcdef-0123456789abcdef-0123456789ab"
OUT = HERE / "verify_token"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write(name: str, selector: int, key: str, token: str) -> None:
    (OUT / name).write_bytes(bytes([selector]) + key.encode() + b"\0" + token.encode())


def main() -> None:
    OUT.mkdir(exist_ok=True)
    vectors = json.loads((CORE / "tests/data/wycheproof/json_web_signature_test.json").read_text())
    for g, group in enumerate(vectors["testGroups"]):
        key = group.get("public") or group.get("private")
        alg = key.get("alg")
        selector = ALGS.index(alg) if alg in ALGS else 0
        for case in group["tests"][:3]:
            token = case["jws"] if isinstance(case["jws"], str) else json.dumps(case["jws"])
            write(f"wycheproof-{case['tcId']}", selector, json.dumps(key), token)
    # Tokens MACed with the fixed key: selector 1 → now = 1 year after 1970.
    for i, claims in enumerate([
        {"exp": 10**10, "iss": "iss", "aud": "aud", "sub": "a"},
        {"exp": 10**10, "iss": "iss", "aud": ["x", "aud"], "nbf": 0, "iat": 0},
        {"exp": 1, "iss": "iss", "aud": "aud"},
        {"exp": 10**10, "iss": "other"},
        {"exp": "never"},
    ]):
        header = b64(json.dumps({"alg": "HS256", "kid": "fixed"}).encode())
        payload = b64(json.dumps(claims).encode())
        mac = hmac.new(FIXED, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        write(f"fixed-{i}", 1, "", f"{header}.{payload}.{b64(mac)}")
    for name in ["rsa2048-public.pem", "p256-public.pem", "ed25519-public.pem", "p384-public.jwk.json"]:
        text = (CORE / "tests/data/keys" / name).read_text()
        selector = {"rsa": 3, "p25": 9, "ed2": 11, "p38": 10}[name[:3]]
        write(f"key-{name}", selector, text, "eyJhbGciOiJub25lIn0.e30.AA")
    # Small, degenerate JWKs and key sets: short numbers reach the size and range checks.
    small = [
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "n": "AQ", "e": "AQ"},
        {"kty": "RSA", "n": "AQ", "e": "AQAB", "alg": "PS256"},
        {"kty": "EC", "crv": "P-256", "x": "AQ", "y": "AQ"},
        {"kty": "EC", "crv": "P-384", "x": "AQ", "y": "AQ", "use": "sig"},
        {"kty": "OKP", "crv": "Ed25519", "x": "AQ"},
        {"kty": "oct", "k": "AQAB"},
    ]
    for i, jwk in enumerate(small):
        selector = {"RSA": 3, "EC": 9, "OKP": 11, "oct": 0}[jwk["kty"]]
        write(f"small-jwk-{i}", selector, json.dumps(jwk), "eyJhbGciOiJSUzI1NiJ9.e30.AQAB")
        write(f"small-jwks-{i}", selector, json.dumps({"keys": [dict(jwk, kid=f"k{i}")]}), "e30.e30.AA")
    # Regression: the structured-mode input that found the RSA key-size underflow (an empty
    # modulus made `n.len() * 8 - 8` overflow in core/src/jwk.rs).
    (OUT / "regression-rsa-empty-modulus").write_bytes(b"ex`")


if __name__ == "__main__":
    main()
