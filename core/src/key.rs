//! Key text (PEM or JWK) → a normalised stored form → a ready verifier.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::DecodePublicKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Map, Value};

use crate::algorithm::{Algorithm, KeyKind};
use crate::error::KeyError;
use crate::jwk::{self, PublicKeyParams};
use crate::signature::SignatureCheck;

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
    // A byte-order mark is dropped with the white space: an editor that saved the PEM or JWK
    // file with one must not turn it into something else (an HMAC secret).
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}');
    if trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(trimmed).map_err(|_| {
            KeyError::Invalid("the key looks like a JWK but is not valid JSON".into())
        })?;
        let Value::Object(object) = value else {
            return Err(KeyError::Invalid("a JWK must be a JSON object".into()));
        };
        if !object.contains_key("kty") && matches!(alg.key_kind(), KeyKind::Hmac { .. }) {
            // Not a JWK: a key set, say, which is no secret either.
            check_not_key_material(alg, trimmed.as_bytes())?;
        }
        let (_, stored) = jwk::parse_jwk(&object, Some(alg), true)?;
        return Ok(stored);
    }
    match alg.key_kind() {
        KeyKind::Hmac { min_secret_bytes } => {
            check_not_key_material(alg, text.as_bytes())?;
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

/// Refuses an HMAC secret that is really public key material: taking a public key's text as
/// an HMAC secret lets anyone who has the public key sign tokens (key confusion, by
/// configuration). Applied to the secret's bytes however they came: key text, an `oct`
/// JWK's `k`, a stored row.
///
/// Refused, after dropping byte-order marks and white space around it: PEM armour
/// (`-----BEGIN`, in any case, anywhere: files often carry a preamble such as OpenSSL's
/// `Bag Attributes` or `-text` output; also in UTF-16), JWK or JWKS JSON text (an object with
/// `kty` or `keys`), a DER public key or certificate (PKCS #1, SPKI, X.509), and any of these
/// once more encoded as base64, base64url or hex (a PEM body without its armour lines is
/// base64 DER).
pub(crate) fn check_not_key_material(alg: Algorithm, secret: &[u8]) -> Result<(), KeyError> {
    match disguised_key(secret, 2) {
        Some(found) => Err(KeyError::TypeMismatch {
            alg: alg.name(),
            expected: alg.key_kind().describe(),
            found: found.into(),
        }),
        None => Ok(()),
    }
}

const PEM_KEY: &str = "a PEM key";

/// What public key material `secret` is, if it is; `depth` bounds the decoding of encodings.
fn disguised_key(secret: &[u8], depth: u8) -> Option<&'static str> {
    let trimmed = trim_secret(secret);
    if has_pem_armour(secret) {
        return Some(PEM_KEY);
    }
    if let Some(found) = jwk_json(trimmed) {
        return Some(found);
    }
    if is_der_key(secret) || is_der_key(trimmed) {
        return Some("a DER-encoded key or certificate");
    }
    if depth > 0 {
        for decoded in [decode_base64_text(trimmed), decode_hex_text(trimmed)]
            .into_iter()
            .flatten()
        {
            if let Some(found) = disguised_key(&decoded, depth - 1) {
                return Some(found);
            }
        }
    }
    None
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Drops UTF-8 byte-order marks and ASCII white space, in any mix, at both ends.
fn trim_secret(mut bytes: &[u8]) -> &[u8] {
    const BOM: &[u8] = "\u{FEFF}".as_bytes();
    loop {
        if let Some(rest) = bytes.strip_prefix(BOM) {
            bytes = rest;
        } else if let [first, rest @ ..] = bytes {
            if !is_space(*first) {
                break;
            }
            bytes = rest;
        } else {
            break;
        }
    }
    loop {
        if let Some(rest) = bytes.strip_suffix(BOM) {
            bytes = rest;
        } else if let [rest @ .., last] = bytes {
            if !is_space(*last) {
                break;
            }
            bytes = rest;
        } else {
            break;
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn has_pem_armour(bytes: &[u8]) -> bool {
    const ARMOUR: &[u8] = b"-----BEGIN";
    // UTF-16 (either byte order): the big-endian form holds this one after its first zero.
    const ARMOUR_UTF16: &[u8] = b"-\0-\0-\0-\0-\0B\0E\0G\0I\0N";
    bytes
        .windows(ARMOUR.len())
        .any(|window| window.eq_ignore_ascii_case(ARMOUR))
        || bytes
            .windows(ARMOUR_UTF16.len())
            .any(|window| window.eq_ignore_ascii_case(ARMOUR_UTF16))
}

/// JWK or JWKS JSON text: an object with `kty` or `keys`, or text that names them.
fn jwk_json(bytes: &[u8]) -> Option<&'static str> {
    const JWK: &str = "a JWK (JSON text)";
    const JWKS: &str = "a JWK set (JSON text)";
    if !bytes.contains(&b'{') {
        return None;
    }
    // Names spelled with escapes ("\u006bty") are seen by parsing; text that is not valid
    // JSON (cut short, several keys run together) by the names themselves.
    fn find(value: &Value) -> Option<&'static str> {
        match value {
            Value::Object(object) if object.contains_key("keys") => Some(JWKS),
            Value::Object(object) if object.contains_key("kty") => Some(JWK),
            Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    if let Some(found) = serde_json::from_slice::<Value>(bytes)
        .ok()
        .as_ref()
        .and_then(find)
    {
        return Some(found);
    }
    if contains(bytes, b"\"keys\"") {
        return Some(JWKS);
    }
    if contains(bytes, b"\"kty\"") {
        return Some(JWK);
    }
    None
}

/// A DER SEQUENCE (with nothing or little after it) that is a PKCS #1 RSA public key or
/// holds the object identifier of an RSA, EC or Edwards-curve key, as every SPKI, X.509
/// certificate and PKCS #8 key does.
fn is_der_key(bytes: &[u8]) -> bool {
    /// 1.2.840.113549.1.1.* (rsaEncryption, RSASSA-PSS, the RSA signature algorithms).
    const PKCS1: &[u8] = &[0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01];
    /// 1.2.840.10045.2.1 (id-ecPublicKey).
    const EC: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    /// 1.3.101.* (Ed25519, Ed448, X25519, X448).
    const EDWARDS: &[u8] = &[0x06, 0x03, 0x2B, 0x65];
    let [0x30, first_length, rest @ ..] = bytes else {
        return false;
    };
    let (length, rest) = match *first_length {
        short @ 0..=0x7f => (usize::from(short), rest),
        0x81..=0x83 => {
            let octets = usize::from(first_length - 0x80);
            if rest.len() < octets {
                return false;
            }
            let (length, rest) = rest.split_at(octets);
            (
                length
                    .iter()
                    .fold(0usize, |acc, &byte| acc << 8 | usize::from(byte)),
                rest,
            )
        }
        _ => return false,
    };
    let Some(body) = rest.get(..length) else {
        return false;
    };
    [PKCS1, EC, EDWARDS].iter().any(|oid| contains(body, oid))
        || rsa::RsaPublicKey::from_pkcs1_der(&bytes[..bytes.len() - rest.len() + length]).is_ok()
}

/// Base64 or base64url text, padded or not, line breaks allowed; `None` when it is not.
fn decode_base64_text(bytes: &[u8]) -> Option<Vec<u8>> {
    use base64::alphabet;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
    let compact: Vec<u8> = bytes.iter().copied().filter(|&b| !is_space(b)).collect();
    if compact.is_empty() {
        return None;
    }
    STANDARD
        .decode(&compact)
        .or_else(|_| URL_SAFE.decode(&compact))
        .ok()
}

/// Hexadecimal text (an even number of digits, white space allowed); `None` when it is not.
fn decode_hex_text(bytes: &[u8]) -> Option<Vec<u8>> {
    let digits: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|&b| !is_space(b))
        .map(|b| (b as char).to_digit(16).map(|d| d as u8))
        .collect::<Option<_>>()?;
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return None;
    }
    Some(
        digits
            .chunks(2)
            .map(|pair| pair[0] << 4 | pair[1])
            .collect(),
    )
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
    check: SignatureCheck,
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
        let check = match stored {
            StoredKey::Secret(secret) => {
                let KeyKind::Hmac { min_secret_bytes } = alg.key_kind() else {
                    return Err(KeyError::TypeMismatch {
                        alg: alg.name(),
                        expected: alg.key_kind().describe(),
                        found: "an HMAC secret".into(),
                    });
                };
                check_not_key_material(alg, secret)?;
                check_secret_length(alg, min_secret_bytes, secret.len())?;
                SignatureCheck::hmac(alg, secret)
            }
            StoredKey::PublicJwk(object) => {
                let (_, stored) = jwk::parse_jwk(object, Some(alg), false)?;
                let StoredKey::PublicJwk(object) = stored else {
                    return Err(KeyError::Invalid("expected a public key".into()));
                };
                SignatureCheck::public_key(alg, &object)?
            }
        };
        Ok(VerifyingKey { alg, check })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Checks `signature` over `signing_input` (`header.payload`, as sent).
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        self.check.verify(signing_input, signature)
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
