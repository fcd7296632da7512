//! Signature checks, on AWS-LC (`aws-lc-rs`).
//!
//! Each key is prepared once — an HMAC key, or a public key parsed into AWS-LC's own form
//! (`ParsedPublicKey`) — and kept with the keyring, so a verification costs the signature
//! maths alone. (`jsonwebtoken`'s AWS-LC verifiers parse the public key again on every call:
//! an RSA key or an EC point costs more to parse than a P-256 check costs to compute.) The
//! HMAC comparison is constant-time (`hmac::verify`).

use aws_lc_rs::hmac;
use aws_lc_rs::rsa::PublicKeyComponents;
use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::algorithm::{Algorithm, KeyKind};
use crate::error::KeyError;

/// A key ready to check signatures of one algorithm.
pub(crate) enum SignatureCheck {
    Hmac(Box<hmac::Key>),
    PublicKey(ParsedPublicKey),
}

impl SignatureCheck {
    /// An HMAC key for `alg` (an `HS*` algorithm).
    pub(crate) fn hmac(alg: Algorithm, secret: &[u8]) -> SignatureCheck {
        let algorithm = match alg {
            Algorithm::HS384 => hmac::HMAC_SHA384,
            Algorithm::HS512 => hmac::HMAC_SHA512,
            _ => hmac::HMAC_SHA256,
        };
        SignatureCheck::Hmac(Box::new(hmac::Key::new(algorithm, secret)))
    }

    /// A public key for `alg` from its (already validated) public JWK members.
    pub(crate) fn public_key(
        alg: Algorithm,
        jwk: &Map<String, Value>,
    ) -> Result<SignatureCheck, KeyError> {
        let parsed = match alg.key_kind() {
            KeyKind::Rsa => PublicKeyComponents {
                n: member_bytes(jwk, "n")?,
                e: member_bytes(jwk, "e")?,
            }
            .to_parsed_public_key(rsa_algorithm(alg)),
            KeyKind::P256 | KeyKind::P384 => {
                // SEC 1 uncompressed point: 0x04 || x || y.
                let mut point = vec![4u8];
                point.extend(member_bytes(jwk, "x")?);
                point.extend(member_bytes(jwk, "y")?);
                let algorithm = if alg == Algorithm::ES384 {
                    &signature::ECDSA_P384_SHA384_FIXED
                } else {
                    &signature::ECDSA_P256_SHA256_FIXED
                };
                ParsedPublicKey::new(algorithm, point)
            }
            KeyKind::Ed25519 => ParsedPublicKey::new(&signature::ED25519, member_bytes(jwk, "x")?),
            KeyKind::Hmac { .. } => {
                return Err(KeyError::Invalid(
                    "an HMAC key is stored as a secret".into(),
                ))
            }
        };
        parsed.map(SignatureCheck::PublicKey).map_err(|rejected| {
            KeyError::Invalid(format!("the public key is not usable: {rejected}"))
        })
    }

    /// Whether `signature` is a valid signature of `signing_input` (`header.payload`).
    pub(crate) fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match self {
            SignatureCheck::Hmac(key) => hmac::verify(key, signing_input, signature).is_ok(),
            SignatureCheck::PublicKey(key) => key.verify_sig(signing_input, signature).is_ok(),
        }
    }
}

fn rsa_algorithm(alg: Algorithm) -> &'static signature::RsaParameters {
    match alg {
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => &signature::RSA_PKCS1_2048_8192_SHA256,
    }
}

fn member_bytes(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    jwk.get(name)
        .and_then(Value::as_str)
        .and_then(|text| URL_SAFE_NO_PAD.decode(text).ok())
        .ok_or_else(|| KeyError::Invalid(format!("the JWK has no usable member \"{name}\"")))
}
