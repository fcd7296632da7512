//! Signing keys and JWS signing, on AWS-LC.
//!
//! A key is generated from the operating system's CSPRNG (AWS-LC's), or imported from an
//! existing private key (PKCS#8, SEC 1 or PKCS#1 PEM, or a private JWK) for a migration. It is
//! stored in one canonical form — PKCS#8 v1 DER for asymmetric keys, the raw secret for HMAC —
//! from which [`SigningKey::from_stored`] rebuilds it. [`SigningKey::public_jwk`] is what is
//! published (never a private member); [`SigningKey::sign`] produces a compact JWS.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{self, SecureRandom, SystemRandom};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, RsaKeyPair,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::algorithm::{Algorithm, KeyKind};
use crate::error::KeyError;

/// Bytes of a generated HMAC secret (and the least an imported one may have for HS256).
pub const GENERATED_SECRET_BYTES: usize = 32;

/// A key that signs tokens of one algorithm.
pub struct SigningKey {
    alg: Algorithm,
    material: Material,
    /// The canonical stored form (PKCS#8 v1 DER, or the HMAC secret).
    stored: Vec<u8>,
}

enum Material {
    // Boxed: AWS-LC's HMAC key holds its hash state inline (over a kilobyte).
    Hmac(Box<hmac::Key>),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

fn unusable(what: impl std::fmt::Display) -> KeyError {
    KeyError::Invalid(format!("the private key is not usable: {what}"))
}

fn ecdsa_signing(alg: Algorithm) -> &'static EcdsaSigningAlgorithm {
    if alg == Algorithm::ES384 {
        &signature::ECDSA_P384_SHA384_FIXED_SIGNING
    } else {
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING
    }
}

fn rsa_encoding(alg: Algorithm) -> &'static dyn signature::RsaEncoding {
    match alg {
        Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_SHA512,
        _ => &signature::RSA_PKCS1_SHA256,
    }
}

fn hmac_algorithm(alg: Algorithm) -> hmac::Algorithm {
    match alg {
        Algorithm::HS384 => hmac::HMAC_SHA384,
        Algorithm::HS512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    }
}

/// Random bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source failed");
    bytes
}

impl SigningKey {
    /// A new key for `alg`: RSA keys have 2048 bits, HMAC secrets
    /// [`GENERATED_SECRET_BYTES`] (or the hash size, when larger).
    pub fn generate(alg: Algorithm) -> Result<SigningKey, KeyError> {
        let stored = match alg.key_kind() {
            KeyKind::Hmac { min_secret_bytes } => {
                let mut secret = vec![0u8; min_secret_bytes.max(GENERATED_SECRET_BYTES)];
                rand::fill(&mut secret).map_err(unusable)?;
                secret
            }
            KeyKind::P256 | KeyKind::P384 => {
                EcdsaKeyPair::generate_pkcs8(ecdsa_signing(alg), &SystemRandom::new())
                    .map_err(unusable)?
                    .as_ref()
                    .to_vec()
            }
            KeyKind::Ed25519 => Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(unusable)?
                .as_ref()
                .to_vec(),
            KeyKind::Rsa => RsaKeyPair::generate(KeySize::Rsa2048)
                .and_then(|pair| pair.as_der())
                .map_err(unusable)?
                .as_ref()
                .to_vec(),
        };
        SigningKey::from_stored(alg, &stored)
    }

    /// Rebuilds a key from its stored form.
    pub fn from_stored(alg: Algorithm, stored: &[u8]) -> Result<SigningKey, KeyError> {
        let material = match alg.key_kind() {
            KeyKind::Hmac { min_secret_bytes } => {
                if stored.len() < min_secret_bytes {
                    return Err(KeyError::SecretTooShort {
                        alg: alg.name(),
                        min: min_secret_bytes,
                        actual: stored.len(),
                    });
                }
                Material::Hmac(Box::new(hmac::Key::new(hmac_algorithm(alg), stored)))
            }
            KeyKind::P256 | KeyKind::P384 => Material::Ecdsa(
                EcdsaKeyPair::from_pkcs8(ecdsa_signing(alg), stored).map_err(unusable)?,
            ),
            KeyKind::Ed25519 => {
                Material::Ed25519(Ed25519KeyPair::from_pkcs8(stored).map_err(unusable)?)
            }
            KeyKind::Rsa => {
                let pair = RsaKeyPair::from_pkcs8(stored).map_err(unusable)?;
                let bits = pair.public_modulus_len() * 8;
                if !(2048..=4096).contains(&bits) {
                    return Err(KeyError::RsaKeySize(bits));
                }
                Material::Rsa(pair)
            }
        };
        Ok(SigningKey {
            alg,
            material,
            stored: stored.to_vec(),
        })
    }

    /// Imports an existing private key for `alg`: a PEM (`PRIVATE KEY`, `EC PRIVATE KEY`,
    /// `RSA PRIVATE KEY`), a private JWK as JSON text (EC, OKP), or, for HMAC, the secret.
    pub fn import(alg: Algorithm, text: &str) -> Result<SigningKey, KeyError> {
        if let KeyKind::Hmac { .. } = alg.key_kind() {
            return SigningKey::from_stored(alg, text.as_bytes());
        }
        let trimmed = text.trim();
        if trimmed.starts_with('{') {
            return SigningKey::from_private_jwk(alg, trimmed);
        }
        let (label, der) = pem_rfc7468::decode_vec(trimmed.as_bytes()).map_err(|_| {
            KeyError::Invalid("the key is neither a PEM private key nor a JWK".into())
        })?;
        let stored = match (alg.key_kind(), label) {
            (_, "PRIVATE KEY") => der,
            (KeyKind::P256 | KeyKind::P384, "EC PRIVATE KEY") => {
                EcdsaKeyPair::from_private_key_der(ecdsa_signing(alg), &der)
                    .map_err(unusable)?
                    .to_pkcs8v1()
                    .map_err(unusable)?
                    .as_ref()
                    .to_vec()
            }
            (KeyKind::Rsa, "RSA PRIVATE KEY") => RsaKeyPair::from_der(&der)
                .map_err(unusable)?
                .as_der()
                .map_err(unusable)?
                .as_ref()
                .to_vec(),
            (_, other) => {
                return Err(KeyError::Invalid(format!(
                    "a PEM labelled {other:?} is not a private key for {}",
                    alg.name()
                )))
            }
        };
        SigningKey::from_stored(alg, &stored)
    }

    fn from_private_jwk(alg: Algorithm, text: &str) -> Result<SigningKey, KeyError> {
        let Ok(Value::Object(jwk)) = serde_json::from_str::<Value>(text) else {
            return Err(KeyError::Invalid("the JWK is not a JSON object".into()));
        };
        let member = |name: &str| {
            jwk.get(name)
                .and_then(Value::as_str)
                .and_then(|text| URL_SAFE_NO_PAD.decode(text).ok())
                .ok_or_else(|| {
                    KeyError::Invalid(format!("the private JWK has no usable member \"{name}\""))
                })
        };
        let stored = match alg.key_kind() {
            KeyKind::P256 | KeyKind::P384 => {
                let mut point = vec![4u8];
                point.extend(member("x")?);
                point.extend(member("y")?);
                EcdsaKeyPair::from_private_key_and_public_key(
                    ecdsa_signing(alg),
                    &member("d")?,
                    &point,
                )
                .map_err(unusable)?
                .to_pkcs8v1()
                .map_err(unusable)?
                .as_ref()
                .to_vec()
            }
            KeyKind::Ed25519 => {
                Ed25519KeyPair::from_seed_and_public_key(&member("d")?, &member("x")?)
                    .map_err(unusable)?
                    .to_pkcs8v1()
                    .map_err(unusable)?
                    .as_ref()
                    .to_vec()
            }
            _ => {
                return Err(KeyError::Invalid(format!(
                    "a private JWK is accepted for EC and OKP keys; give an {} key as PEM",
                    alg.name()
                )))
            }
        };
        SigningKey::from_stored(alg, &stored)
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The stored form (secret material: keep it where no request role can read it).
    pub fn stored(&self) -> &[u8] {
        &self.stored
    }

    /// The public JWK to publish and verify with (`kty`, `crv`/`n`/`e`, `x`, `y`), without
    /// `kid`/`alg`/`use`; `None` for an HMAC key, which has no public half.
    pub fn public_jwk(&self) -> Option<Map<String, Value>> {
        let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
        let mut jwk = Map::new();
        match &self.material {
            Material::Hmac(_) => return None,
            Material::Ecdsa(pair) => {
                let point = pair.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                jwk.insert("kty".into(), "EC".into());
                let curve = if self.alg == Algorithm::ES384 {
                    "P-384"
                } else {
                    "P-256"
                };
                jwk.insert("crv".into(), curve.into());
                jwk.insert("x".into(), b64(&point[1..1 + half]));
                jwk.insert("y".into(), b64(&point[1 + half..]));
            }
            Material::Ed25519(pair) => {
                jwk.insert("kty".into(), "OKP".into());
                jwk.insert("crv".into(), "Ed25519".into());
                jwk.insert("x".into(), b64(pair.public_key().as_ref()));
            }
            Material::Rsa(pair) => {
                let public = pair.public_key();
                jwk.insert("kty".into(), "RSA".into());
                jwk.insert(
                    "n".into(),
                    b64(public.modulus().big_endian_without_leading_zero()),
                );
                jwk.insert(
                    "e".into(),
                    b64(public.exponent().big_endian_without_leading_zero()),
                );
            }
        }
        Some(jwk)
    }

    /// A compact JWS of `claims` with header `{"alg", "typ": "JWT", "kid"}`.
    pub fn sign(&self, kid: &str, claims: &Map<String, Value>) -> Result<String, KeyError> {
        let header = serde_json::json!({ "alg": self.alg.name(), "typ": "JWT", "kid": kid });
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string()));
        let signature = self.signature(token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }

    fn signature(&self, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(match &self.material {
            Material::Hmac(key) => hmac::sign(key, input).as_ref().to_vec(),
            Material::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), input)
                .map_err(unusable)?
                .as_ref()
                .to_vec(),
            Material::Ed25519(pair) => pair.sign(input).as_ref().to_vec(),
            Material::Rsa(pair) => {
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    rsa_encoding(self.alg),
                    &SystemRandom::new(),
                    input,
                    &mut signature,
                )
                .map_err(unusable)?;
                signature
            }
        })
    }
}
