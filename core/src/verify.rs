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
    verify_reporting(token, keyring, policy, now).map_err(|(error, _)| error)
}

/// What is known of a refused token, for the record of recent rejections: the kid its header
/// named, and its claims only when the signature was good (a forged token's claims are
/// attacker text and are never reported).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefusedToken {
    pub kid: Option<String>,
    pub signed_claims: Option<Claims>,
}

/// [`verify_with_key`], saying on refusal what is known of the token.
pub fn verify_reporting(
    token: &str,
    keyring: &Keyring,
    policy: &Policy<'_>,
    now: i64,
) -> Result<(Claims, KeyRef), (VerifyError, RefusedToken)> {
    let mut refused = RefusedToken::default();
    let fail = |error: VerifyError, refused: RefusedToken| Err((error, refused));
    let jws = match parse_compact(token, policy.max_token_bytes) {
        Ok(jws) => jws,
        Err(error) => return fail(error.into(), refused),
    };
    refused.kid.clone_from(&jws.header.kid);
    let Some(alg) = Algorithm::from_name(&jws.header.alg) else {
        return fail(
            Rejection::UnsupportedAlgorithm(jws.header.alg.clone()).into(),
            refused,
        );
    };
    let entry = match keyring.select(jws.header.kid.as_deref()) {
        Ok(entry) => entry,
        Err(error) => return fail(error, refused),
    };
    if entry.key.algorithm() != alg {
        return fail(
            Rejection::AlgorithmMismatch {
                token: jws.header.alg,
                key: entry.key.algorithm().name(),
            }
            .into(),
            refused,
        );
    }
    if !entry
        .key
        .verify(jws.signing_input.as_bytes(), &jws.signature)
    {
        return fail(Rejection::BadSignature.into(), refused);
    }
    let claims = match jws.claims() {
        Ok(claims) => claims,
        Err(error) => return fail(error.into(), refused),
    };
    if let Some(issuer) = &entry.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
            refused.signed_claims = Some(claims);
            return fail(Rejection::KeyIssuerMismatch.into(), refused);
        }
    }
    if let Err(error) = check_claims(&claims, &policy.claims, now) {
        refused.signed_claims = Some(claims);
        return fail(error.into(), refused);
    }
    let key = KeyRef {
        kid: entry.kid.clone(),
        fingerprint: entry.fingerprint,
    };
    Ok((claims, key))
}
