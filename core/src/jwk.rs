//! JSON Web Keys (RFC 7517) and key sets, treated as hostile input.

use crate::limits::{MAX_JWKS_KEYS, MAX_KID_BYTES};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::BigUint;
use serde_json::{Map, Value};

use crate::algorithm::{Algorithm, KeyKind};
use crate::error::KeyError;
use crate::key::{
    check_not_key_material, check_secret_length, StoredKey, MAX_RSA_BITS, MIN_RSA_BITS,
};

/// The public numbers that define a key, decoded.
#[derive(Clone, Debug)]
pub(crate) enum PublicKeyParams {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256 { x: Vec<u8>, y: Vec<u8> },
    P384 { x: Vec<u8>, y: Vec<u8> },
    Ed25519 { x: Vec<u8> },
}

/// Members that only a private JWK has.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

fn decode_member(object: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    let text = object
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| KeyError::Invalid(format!("the JWK has no string member \"{name}\"")))?;
    URL_SAFE_NO_PAD.decode(text).map_err(|_| {
        KeyError::Invalid(format!(
            "the JWK member \"{name}\" is not base64url without padding"
        ))
    })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

impl PublicKeyParams {
    fn kind(&self) -> KeyKind {
        match self {
            PublicKeyParams::Rsa { .. } => KeyKind::Rsa,
            PublicKeyParams::P256 { .. } => KeyKind::P256,
            PublicKeyParams::P384 { .. } => KeyKind::P384,
            PublicKeyParams::Ed25519 { .. } => KeyKind::Ed25519,
        }
    }

    /// Checks that the key is of the kind `alg` needs and is itself sound: RSA size and
    /// exponent, EC points on their curve, Ed25519 points that decompress and are not weak.
    pub(crate) fn check_fits(&self, alg: Algorithm) -> Result<(), KeyError> {
        if self.kind() != alg.key_kind() {
            return Err(KeyError::TypeMismatch {
                alg: alg.name(),
                expected: alg.key_kind().describe(),
                found: self.kind().describe().into(),
            });
        }
        match self {
            PublicKeyParams::Rsa { n, e } => {
                let n = strip_leading_zeros(n);
                let e = strip_leading_zeros(e);
                let bits = n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize);
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(KeyError::RsaKeySize(bits));
                }
                let odd = |v: &[u8]| v.last().is_some_and(|b| b & 1 == 1);
                if !odd(n) || !odd(e) {
                    return Err(KeyError::Invalid(
                        "the RSA modulus and exponent must be odd".into(),
                    ));
                }
                rsa::RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
                    .map_err(|err| KeyError::Invalid(format!("unusable RSA public key: {err}")))?;
            }
            PublicKeyParams::P256 { x, y } => {
                if x.len() != 32 || y.len() != 32 {
                    return Err(KeyError::Invalid(
                        "P-256 coordinates must be 32 bytes each".into(),
                    ));
                }
                let sec1 = [&[0x04][..], x, y].concat();
                p256::PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| KeyError::Invalid("the point is not on the P-256 curve".into()))?;
            }
            PublicKeyParams::P384 { x, y } => {
                if x.len() != 48 || y.len() != 48 {
                    return Err(KeyError::Invalid(
                        "P-384 coordinates must be 48 bytes each".into(),
                    ));
                }
                let sec1 = [&[0x04][..], x, y].concat();
                p384::PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| KeyError::Invalid("the point is not on the P-384 curve".into()))?;
            }
            PublicKeyParams::Ed25519 { x } => {
                let bytes: [u8; 32] = x
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::Invalid("an Ed25519 public key is 32 bytes".into()))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| KeyError::Invalid("not a valid Ed25519 public key".into()))?;
                if key.is_weak() {
                    return Err(KeyError::Invalid(
                        "the Ed25519 public key has small order".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The algorithm a JWK without `alg` is used with.
fn inferred_algorithm(kty: &str, crv: Option<&str>) -> Option<Algorithm> {
    match (kty, crv) {
        ("RSA", _) => Some(Algorithm::RS256),
        ("EC", Some("P-256")) => Some(Algorithm::ES256),
        ("EC", Some("P-384")) => Some(Algorithm::ES384),
        ("OKP", Some("Ed25519")) => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// Parses one JWK. `expected` is the algorithm the caller asked for (`add_key`); without it
/// the JWK's own `alg`, or its key type, decides. `allow_secret` admits `kty: oct`.
pub(crate) fn parse_jwk(
    object: &Map<String, Value>,
    expected: Option<Algorithm>,
    allow_secret: bool,
) -> Result<(Algorithm, StoredKey), KeyError> {
    let kty = object
        .get("kty")
        .and_then(Value::as_str)
        .ok_or_else(|| KeyError::Invalid("the JWK has no \"kty\"".into()))?;
    let crv = object.get("crv").and_then(Value::as_str);

    match object.get("use") {
        None => {}
        Some(Value::String(usage)) if usage == "sig" => {}
        Some(other) => {
            return Err(KeyError::NotForSignatures(format!(
                "its \"use\" is {other}"
            )))
        }
    }
    if let Some(ops) = object.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err(KeyError::NotForSignatures(
                "its \"key_ops\" do not include \"verify\"".into(),
            ));
        }
    }

    match (kty, crv) {
        ("oct", _) if !allow_secret => {
            return Err(KeyError::NotForSignatures(
                "symmetric keys are not taken from a key set".into(),
            ))
        }
        ("oct" | "RSA", _) | ("EC", Some("P-256" | "P-384")) | ("OKP", Some("Ed25519")) => {}
        ("EC" | "OKP", Some(curve)) => {
            return Err(KeyError::Invalid(format!("unsupported curve {curve:?}")))
        }
        _ => return Err(KeyError::Invalid(format!("unsupported key type {kty:?}"))),
    }

    let jwk_alg = match object.get("alg") {
        None => None,
        Some(Value::String(name)) => Some(
            Algorithm::from_name(name)
                .ok_or_else(|| KeyError::UnsupportedAlgorithm(name.clone()))?,
        ),
        Some(_) => {
            return Err(KeyError::Invalid(
                "the JWK member \"alg\" is not a string".into(),
            ))
        }
    };
    let alg = match (expected, jwk_alg) {
        (Some(expected), Some(declared)) if expected != declared => {
            return Err(KeyError::TypeMismatch {
                alg: expected.name(),
                expected: expected.key_kind().describe(),
                found: format!("a JWK declared for {declared}"),
            })
        }
        (Some(alg), _) | (None, Some(alg)) => alg,
        (None, None) => inferred_algorithm(kty, crv).ok_or_else(|| {
            KeyError::Invalid(format!(
                "cannot tell the algorithm of a \"{kty}\" JWK without \"alg\""
            ))
        })?,
    };

    if kty == "oct" {
        if !allow_secret {
            return Err(KeyError::NotForSignatures(
                "symmetric keys are not taken from a key set".into(),
            ));
        }
        let KeyKind::Hmac { min_secret_bytes } = alg.key_kind() else {
            return Err(KeyError::TypeMismatch {
                alg: alg.name(),
                expected: alg.key_kind().describe(),
                found: "a symmetric (oct) key".into(),
            });
        };
        let secret = decode_member(object, "k")?;
        check_not_key_material(alg, &secret)?;
        check_secret_length(alg, min_secret_bytes, secret.len())?;
        return Ok((alg, StoredKey::Secret(secret)));
    }
    if PRIVATE_MEMBERS
        .iter()
        .any(|name| object.contains_key(*name))
    {
        return Err(KeyError::PrivateKeyMaterial);
    }
    let params = match (kty, crv) {
        // Leading zero octets (RFC 7518 §6.3.1.1 forbids them, some libraries add them) are
        // dropped so that the stored form is the same as for the key's PEM.
        ("RSA", _) => PublicKeyParams::Rsa {
            n: strip_leading_zeros(&decode_member(object, "n")?).to_vec(),
            e: strip_leading_zeros(&decode_member(object, "e")?).to_vec(),
        },
        ("EC", Some("P-256")) => PublicKeyParams::P256 {
            x: decode_member(object, "x")?,
            y: decode_member(object, "y")?,
        },
        ("EC", Some("P-384")) => PublicKeyParams::P384 {
            x: decode_member(object, "x")?,
            y: decode_member(object, "y")?,
        },
        ("OKP", Some("Ed25519")) => PublicKeyParams::Ed25519 {
            x: decode_member(object, "x")?,
        },
        _ => unreachable!("key types were checked above"),
    };
    params.check_fits(alg)?;
    Ok((alg, StoredKey::PublicJwk(params.to_jwk(alg))))
}

/// Checks a key id: 1 to [`MAX_KID_BYTES`] bytes, no control characters.
pub fn check_kid(kid: &str) -> Result<(), KeyError> {
    if kid.is_empty() || kid.len() > MAX_KID_BYTES || kid.chars().any(char::is_control) {
        return Err(KeyError::InvalidKid);
    }
    Ok(())
}

/// One key of a JWKS document and what became of it.
#[derive(Debug)]
pub struct JwksEntry {
    /// Position in the `keys` array.
    pub index: usize,
    pub kid: Option<String>,
    pub outcome: Result<(Algorithm, StoredKey), KeyError>,
}

/// Reads every key of a JWKS document (`{"keys": [...]}`). Keys without a usable `kid`,
/// symmetric keys, encryption keys, unsupported types and kids that appear more than once
/// come back with an error outcome, to be skipped and reported.
pub fn parse_jwks(document: &Value) -> Result<Vec<JwksEntry>, KeyError> {
    let keys = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| KeyError::InvalidJwks("a JWKS is an object with a \"keys\" array".into()))?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(KeyError::InvalidJwks(format!(
            "a JWKS may hold at most {MAX_JWKS_KEYS} keys"
        )));
    }
    let kid_of = |key: &Value| key.get("kid").and_then(Value::as_str).map(str::to_owned);
    let mut entries: Vec<JwksEntry> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| {
            let kid = kid_of(key);
            let outcome = match (key, &kid) {
                (Value::Object(_), None) => Err(KeyError::Invalid("the key has no \"kid\"".into())),
                (Value::Object(object), Some(kid)) => {
                    check_kid(kid).and_then(|_| parse_jwk(object, None, false))
                }
                _ => Err(KeyError::Invalid("the key is not a JSON object".into())),
            };
            JwksEntry {
                index,
                kid,
                outcome,
            }
        })
        .collect();
    let all_kids: Vec<Option<String>> = entries.iter().map(|e| e.kid.clone()).collect();
    for entry in &mut entries {
        let Some(kid) = &entry.kid else { continue };
        if all_kids
            .iter()
            .filter(|k| k.as_deref() == Some(kid))
            .count()
            > 1
        {
            entry.outcome = Err(KeyError::Invalid(
                "the kid appears more than once in the set".into(),
            ));
        }
    }
    Ok(entries)
}
