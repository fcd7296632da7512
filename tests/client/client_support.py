"""Token and key helpers of the client tests. Tokens are made by PyJWT (an implementation
independent of the extension) or, for deliberately broken ones, assembled by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

HMAC_ALGS = ("HS256", "HS384", "HS512")
RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
ALL_ALGS = HMAC_ALGS + RSA_ALGS + ("ES256", "ES384", "EdDSA")
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

# The exact reasons of `invalid token: <reason>`.
REASONS = (
    "malformed", "too large", "unsupported algorithm", "unknown key", "retired key",
    "algorithm mismatch", "forbidden header", "bad signature", "expired", "not yet valid",
    "issued in the future", "wrong issuer", "wrong audience", "missing claim",
    "invalid claim type", "role not allowed", "lifetime too long", "revoked",
)


def invalid(reason: str) -> str:
    assert reason in REASONS, reason
    return f"invalid token: {reason}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def json_b64(value) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def now() -> int:
    return int(time.time())


def claims(**extra) -> dict:
    """Typical claims, valid for an hour."""
    t = now()
    base = {"sub": "user-42", "iat": t, "exp": t + 3600, "role": "authenticated"}
    base.update(extra)
    return base


@dataclass
class Key:
    """A signing key and the public forms the extension is given."""

    alg: str
    private: object  # bytes for HMAC, a cryptography private key otherwise
    kid: str = ""
    public_pem: str | None = None
    public_jwk: dict = field(default_factory=dict)

    @property
    def secret_text(self) -> str:
        """The HMAC secret as given to auth.add_key (its UTF-8 bytes are the key)."""
        assert isinstance(self.private, bytes)
        return self.private.decode()

    def sign(self, payload: dict, headers: dict | None = None, kid: str | None = "default",
             alg: str | None = None) -> str:
        hdr = dict(headers or {})
        use_kid = self.kid if kid == "default" else kid
        if use_kid is not None:
            hdr["kid"] = use_kid
        return jwt.encode(payload, self.private, algorithm=alg or self.alg, headers=hdr)

    def key_text(self, form: str) -> str:
        """What auth.add_key gets: 'pem' or 'jwk' (or, for HMAC, 'secret')."""
        if self.alg in HMAC_ALGS:
            if form == "jwk":
                return json.dumps({"kty": "oct", "k": b64url(self.private)})
            return self.secret_text
        if form == "pem":
            return self.public_pem
        return json.dumps(self.public_jwk)


def _pem(public_key) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def rsa_private(bits: int = 2048):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_key(alg: str, kid: str = "", rsa_key=None) -> Key:
    """A fresh key for `alg` (RSA keys may be shared between RSA algorithms)."""
    if alg in HMAC_ALGS:
        # Printable secret of exactly twice the minimum length.
        secret = hashlib.sha512(f"{alg}/{kid}/{time.time_ns()}".encode()).hexdigest()
        secret = (secret * 2)[: 2 * HMAC_MIN_BYTES[alg]]
        return Key(alg, secret.encode(), kid)
    if alg in RSA_ALGS:
        private = rsa_key or rsa_private()
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        raise ValueError(alg)
    return Key(alg, private, kid, _pem(private.public_key()), jwk)


def private_pem(key: Key) -> str:
    return key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def assemble(header: dict | str, payload: dict | bytes | str, signature: bytes | str) -> str:
    """A compact JWS from parts; dicts are JSON-encoded, bytes base64url-encoded, str taken
    as already encoded."""
    h = json_b64(header) if isinstance(header, dict) else header
    if isinstance(payload, dict):
        p = json_b64(payload)
    elif isinstance(payload, bytes):
        p = b64url(payload)
    else:
        p = payload
    s = b64url(signature) if isinstance(signature, bytes) else signature
    return f"{h}.{p}.{s}"


def hmac_token(header: dict, payload: dict | bytes, secret: bytes, hash_name: str = "sha256") -> str:
    """An HMAC-signed token built by hand (PyJWT refuses some keys we need, e.g. PEM text)."""
    h = json_b64(header)
    p = json_b64(payload) if isinstance(payload, dict) else b64url(payload)
    mac = hmac.new(secret, f"{h}.{p}".encode(), hash_name).digest()
    return f"{h}.{p}.{b64url(mac)}"


def split(token: str) -> tuple[dict, dict, bytes]:
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), b64url_decode(s)
