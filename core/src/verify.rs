use serde_json::Value;

use crate::algorithm::Algorithm;
use crate::claims::{check_claims, ClaimRules};
use crate::error::{Rejection, VerifyError};
use crate::keyring::{KeyRef, Keyring};
use crate::token::parse_compact;
use crate::Claims;

/// Everything besides the keyring that decides whether a token is accepted.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    pub max_token_bytes: usize,
    pub claims: ClaimRules<'a>,
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
    verify_with_key(token, keyring, policy, now).map(|(claims, _)| claims)
}

/// [`verify`], also saying which key verified the token.
pub fn verify_with_key(
    token: &str,
    keyring: &Keyring,
    policy: &Policy<'_>,
    now: i64,
) -> Result<(Claims, KeyRef), VerifyError> {
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
    let claims = jws.claims()?;
    if let Some(issuer) = &entry.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
            return Err(Rejection::KeyIssuerMismatch.into());
        }
    }
    check_claims(&claims, &policy.claims, now)?;
    let key = KeyRef {
        kid: entry.kid.clone(),
        fingerprint: entry.fingerprint,
    };
    Ok((claims, key))
}
