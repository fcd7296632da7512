use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use crate::algorithm::Algorithm;
use crate::claims::{check_claims, ClaimRules};
use crate::error::{Rejection, VerifyError};
use crate::keyring::Keyring;
use crate::token::parse_compact;
use crate::Claims;

/// Everything besides the keyring that decides whether a token is accepted.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    pub max_token_bytes: usize,
    pub claims: ClaimRules<'a>,
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(object) => object
            .iter()
            .any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Verifies a compact JWS and returns its claims.
///
/// Order: size, structure, header, algorithm, key, signature, and only then the payload and
/// its claims, so nothing an attacker wrote past the header is parsed before the signature
/// is known to be good. `now` is seconds since the Unix epoch.
pub fn verify(
    token: &str,
    keyring: &Keyring,
    policy: &Policy<'_>,
    now: i64,
) -> Result<Claims, VerifyError> {
    let jws = parse_compact(token, policy.max_token_bytes)?;
    let alg = Algorithm::from_name(&jws.header.alg)
        .ok_or_else(|| Rejection::UnsupportedAlgorithm(jws.header.alg.clone()))?;
    let entry = keyring.select(jws.header.kid.as_deref())?;
    if entry.key.algorithm() != alg {
        return Err(Rejection::AlgorithmMismatch {
            token: jws.header.alg,
            key: entry.key.algorithm().name(),
        }
        .into());
    }
    if !entry
        .key
        .verify(jws.signing_input.as_bytes(), &jws.signature)
    {
        return Err(Rejection::BadSignature.into());
    }
    let payload = URL_SAFE_NO_PAD
        .decode(jws.payload_b64)
        .map_err(|_| Rejection::Malformed("The payload is not base64url without padding."))?;
    let claims: Claims = serde_json::from_slice(&payload)
        .map_err(|_| Rejection::Malformed("The payload is not a JSON object."))?;
    if claims
        .iter()
        .any(|(k, v)| k.contains('\0') || contains_nul(v))
    {
        return Err(Rejection::Malformed("The claims contain a NUL character (\\u0000).").into());
    }
    check_claims(&claims, &policy.claims, now)?;
    Ok(claims)
}
