#!/usr/bin/env python3
"""Generates the test keys in this folder (run once, by hand; the tests only read the files).

Requires the `cryptography` package. Every key here is a throwaway test key.
"""
import base64
import json
import pathlib

from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

HERE = pathlib.Path(__file__).resolve().parent


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(value: int, size: int = 0) -> bytes:
    size = size or max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(size, "big")


def write(name: str, data) -> None:
    if isinstance(data, dict):
        data = json.dumps(data, indent=2) + "\n"
    if isinstance(data, bytes):
        data = data.decode()
    (HERE / name).write_text(data)


def private_pem(key, fmt=s.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(s.Encoding.PEM, fmt, s.NoEncryption())


def public_pem(key, fmt=s.PublicFormat.SubjectPublicKeyInfo) -> bytes:
    return key.public_key().public_bytes(s.Encoding.PEM, fmt)


def rsa_files(stem: str, bits: int) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    numbers = key.public_key().public_numbers()
    write(f"{stem}-private.pem", private_pem(key))
    write(f"{stem}-private-pkcs1.pem", private_pem(key, s.PrivateFormat.TraditionalOpenSSL))
    write(f"{stem}-public.pem", public_pem(key))
    write(f"{stem}-public-pkcs1.pem", public_pem(key, s.PublicFormat.PKCS1))
    write(f"{stem}-public.jwk.json", {"kty": "RSA", "n": b64(uint(numbers.n)), "e": b64(uint(numbers.e))})
    priv = key.private_numbers()
    write(
        f"{stem}-private.jwk.json",
        {
            "kty": "RSA",
            "n": b64(uint(numbers.n)),
            "e": b64(uint(numbers.e)),
            "d": b64(uint(priv.d)),
            "p": b64(uint(priv.p)),
            "q": b64(uint(priv.q)),
            "dp": b64(uint(priv.dmp1)),
            "dq": b64(uint(priv.dmq1)),
            "qi": b64(uint(priv.iqmp)),
        },
    )


def ec_files(stem: str, curve, crv: str, size: int) -> None:
    key = ec.generate_private_key(curve)
    numbers = key.public_key().public_numbers()
    write(f"{stem}-private.pem", private_pem(key))
    write(f"{stem}-private-sec1.pem", private_pem(key, s.PrivateFormat.TraditionalOpenSSL))
    write(f"{stem}-public.pem", public_pem(key))
    jwk = {"kty": "EC", "crv": crv, "x": b64(uint(numbers.x, size)), "y": b64(uint(numbers.y, size))}
    write(f"{stem}-public.jwk.json", jwk)
    write(f"{stem}-private.jwk.json", dict(jwk, d=b64(uint(key.private_numbers().private_value, size))))


def main() -> None:
    rsa_files("rsa2048", 2048)
    rsa_files("rsa1024", 1024)
    ec_files("p256", ec.SECP256R1(), "P-256", 32)
    ec_files("p384", ec.SECP384R1(), "P-384", 48)
    ec_files("p521", ec.SECP521R1(), "P-521", 66)
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
    write("ed25519-private.pem", private_pem(key))
    write("ed25519-public.pem", public_pem(key))
    write("ed25519-public.jwk.json", {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)})
    seed = key.private_bytes(s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption())
    write("ed25519-private.jwk.json", {"kty": "OKP", "crv": "Ed25519", "x": b64(raw), "d": b64(seed)})
    # A small-order Ed25519 point (the identity, y = 1) as an SPKI PEM: a "public key" that
    # every signature of the right shape can match. Built from the fixed SPKI prefix.
    spki_prefix = bytes.fromhex("302a300506032b6570032100")
    identity = (1).to_bytes(32, "little")
    der = base64.encodebytes(spki_prefix + identity).decode().replace("\n", "")
    write("ed25519-small-order-public.pem", f"-----BEGIN PUBLIC KEY-----\n{der}\n-----END PUBLIC KEY-----\n")


if __name__ == "__main__":
    main()
