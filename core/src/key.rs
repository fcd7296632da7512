//! Key text (PEM or JWK) → a normalised stored form → a ready verifier.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::DecodePublicKey;
use jsonwebtoken::crypto::{rust_crypto::DEFAULT_PROVIDER, JwtVerifier};
use jsonwebtoken::DecodingKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Map, Value};

use crate::algorithm::{Algorithm, KeyKind};
use crate::error::KeyError;
use crate::jwk::{self, PublicKeyParams};

/// A key as the keyring stores it: the raw HMAC secret, or the public key as a JWK holding
/// only the members that define it (`kty`, `crv`, `n`, `e`, `x`, `y`) plus `alg` and `use`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredKey {
    Secret(Vec<u8>),
    PublicJwk(Map<String, Value>),
}

pub(crate) const MIN_RSA_BITS: usize = 2048;
pub(crate) const MAX_RSA_BITS: usize = 4096;

/// Parses the key text given with an algorithm: a JWK (JSON object), a PEM public key, or for
/// HMAC algorithms the secret itself (its UTF-8 bytes, as Supabase and PostgREST use it).
pub fn parse_key(alg: Algorithm, text: &str) -> Result<StoredKey, KeyError> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(trimmed).map_err(|_| {
            KeyError::Invalid("the key looks like a JWK but is not valid JSON".into())
        })?;
        let Value::Object(object) = value else {
            return Err(KeyError::Invalid("a JWK must be a JSON object".into()));
        };
        let (_, stored) = jwk::parse_jwk(&object, Some(alg), true)?;
        return Ok(stored);
    }
    match alg.key_kind() {
        // A PEM block is a public (or private) key, never a secret: taking its text as an HMAC
        // secret would let anyone who has the public key sign tokens (key confusion).
        KeyKind::Hmac { .. } if trimmed.starts_with("-----BEGIN") => Err(KeyError::TypeMismatch {
            alg: alg.name(),
            expected: alg.key_kind().describe(),
            found: "a PEM key".into(),
        }),
        KeyKind::Hmac { min_secret_bytes } => {
            check_secret_length(alg, min_secret_bytes, text.len())?;
            Ok(StoredKey::Secret(text.as_bytes().to_vec()))
        }
        _ if trimmed.starts_with("-----BEGIN") => parse_pem(alg, trimmed),
        other => Err(KeyError::Invalid(format!(
            "{alg} needs {} as PEM (-----BEGIN PUBLIC KEY-----) or as a JWK",
            other.describe()
        ))),
    }
}

pub(crate) fn check_secret_length(
    alg: Algorithm,
    min: usize,
    actual: usize,
) -> Result<(), KeyError> {
    if actual < min {
        return Err(KeyError::SecretTooShort {
            alg: alg.name(),
            min,
            actual,
        });
    }
    Ok(())
}

/// What a PEM block turned out to hold.
fn pem_params(pem: &str) -> Result<PublicKeyParams, KeyError> {
    if pem.contains("PRIVATE KEY-----") {
        return Err(KeyError::PrivateKeyMaterial);
    }
    if pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(KeyError::Invalid(
            "X.509 certificates are not accepted; give the certificate's public key (-----BEGIN PUBLIC KEY-----)".into(),
        ));
    }
    if let Ok(key) = rsa::RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem))
    {
        return Ok(PublicKeyParams::Rsa {
            n: key.n().to_bytes_be(),
            e: key.e().to_bytes_be(),
        });
    }
    if let Ok(key) = p256::PublicKey::from_public_key_pem(pem) {
        let point = key.to_encoded_point(false);
        return Ok(PublicKeyParams::P256 {
            x: point.x().map(|c| c.to_vec()).unwrap_or_default(),
            y: point.y().map(|c| c.to_vec()).unwrap_or_default(),
        });
    }
    if let Ok(key) = p384::PublicKey::from_public_key_pem(pem) {
        let point = key.to_encoded_point(false);
        return Ok(PublicKeyParams::P384 {
            x: point.x().map(|c| c.to_vec()).unwrap_or_default(),
            y: point.y().map(|c| c.to_vec()).unwrap_or_default(),
        });
    }
    if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
        return Ok(PublicKeyParams::Ed25519 {
            x: key.to_bytes().to_vec(),
        });
    }
    Err(KeyError::Invalid(
        "the PEM text is not an RSA, EC P-256, EC P-384 or Ed25519 public key".into(),
    ))
}

fn parse_pem(alg: Algorithm, pem: &str) -> Result<StoredKey, KeyError> {
    let params = pem_params(pem)?;
    params.check_fits(alg)?;
    Ok(StoredKey::PublicJwk(params.to_jwk(alg)))
}

/// A key ready to check signatures: built once per key and cached with the keyring.
pub struct VerifyingKey {
    alg: Algorithm,
    verifier: Box<dyn JwtVerifier>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Builds the verifier for a stored key, re-checking that it fits `alg` (stored rows may
    /// have been written by hand).
    pub fn new(alg: Algorithm, stored: &StoredKey) -> Result<VerifyingKey, KeyError> {
        let decoding_key = match stored {
            StoredKey::Secret(secret) => {
                let KeyKind::Hmac { min_secret_bytes } = alg.key_kind() else {
                    return Err(KeyError::TypeMismatch {
                        alg: alg.name(),
                        expected: alg.key_kind().describe(),
                        found: "an HMAC secret".into(),
                    });
                };
                check_secret_length(alg, min_secret_bytes, secret.len())?;
                DecodingKey::from_secret(secret)
            }
            StoredKey::PublicJwk(object) => {
                let (_, stored) = jwk::parse_jwk(object, Some(alg), false)?;
                let StoredKey::PublicJwk(object) = stored else {
                    return Err(KeyError::Invalid("expected a public key".into()));
                };
                decoding_key_for(alg, &object)?
            }
        };
        let verifier = (DEFAULT_PROVIDER.verifier_factory)(&alg.to_jwt(), &decoding_key)
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        Ok(VerifyingKey { alg, verifier })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Checks `signature` over `signing_input` (`header.payload`, as sent).
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        self.verifier
            .verify(signing_input, &signature.to_vec())
            .is_ok()
    }
}

fn member<'a>(object: &'a Map<String, Value>, name: &str) -> Result<&'a str, KeyError> {
    object
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| KeyError::Invalid(format!("the JWK has no string member \"{name}\"")))
}

fn decoding_key_for(alg: Algorithm, object: &Map<String, Value>) -> Result<DecodingKey, KeyError> {
    let invalid = |e: jsonwebtoken::errors::Error| KeyError::Invalid(e.to_string());
    match alg.key_kind() {
        KeyKind::Rsa => {
            DecodingKey::from_rsa_components(member(object, "n")?, member(object, "e")?)
                .map_err(invalid)
        }
        KeyKind::P256 | KeyKind::P384 => {
            DecodingKey::from_ec_components(member(object, "x")?, member(object, "y")?)
                .map_err(invalid)
        }
        KeyKind::Ed25519 => DecodingKey::from_ed_components(member(object, "x")?).map_err(invalid),
        KeyKind::Hmac { .. } => Err(KeyError::Invalid(
            "an HMAC key is stored as a secret".into(),
        )),
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl PublicKeyParams {
    pub(crate) fn to_jwk(&self, alg: Algorithm) -> Map<String, Value> {
        let value = match self {
            PublicKeyParams::Rsa { n, e } => json!({"kty": "RSA", "n": b64(n), "e": b64(e)}),
            PublicKeyParams::P256 { x, y } => {
                json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)})
            }
            PublicKeyParams::P384 { x, y } => {
                json!({"kty": "EC", "crv": "P-384", "x": b64(x), "y": b64(y)})
            }
            PublicKeyParams::Ed25519 { x } => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)}),
        };
        let Value::Object(mut object) = value else {
            unreachable!("json! object literal")
        };
        object.insert("alg".into(), Value::String(alg.name().into()));
        object.insert("use".into(), Value::String("sig".into()));
        object
    }
}
