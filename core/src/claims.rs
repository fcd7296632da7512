//! Registered-claim rules (RFC 7519 §4.1), applied at a clock value the caller gives.

use crate::limits::MAX_ID_BYTES;
use serde_json::Value;

use crate::error::Rejection;
use crate::Claims;

/// The claim rules in force, from the trusted settings.
#[derive(Debug, Clone, Default)]
pub struct ClaimRules<'a> {
    /// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: i64,
    /// When set, `iss` must equal it.
    pub issuer: Option<&'a str>,
    /// When set, `aud` (a string or an array of strings) must contain it.
    pub audience: Option<&'a str>,
    /// When set (seconds), `iat` is required and `exp - iat` may not exceed it, which bounds
    /// how long a revocation must be kept.
    pub max_lifetime: Option<i64>,
}

fn numeric_date(
    claims: &Claims,
    name: &'static str,
    message: &'static str,
) -> Result<Option<f64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or(Rejection::InvalidClaimType(message)),
        Some(_) => Err(Rejection::InvalidClaimType(message)),
    }
}

fn string_claim<'c>(
    claims: &'c Claims,
    name: &'static str,
    message: &'static str,
) -> Result<Option<&'c str>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Rejection::InvalidClaimType(message)),
    }
}

/// Every audience the token names; `None` when it has no `aud`.
fn audiences(claims: &Claims) -> Result<Option<Vec<&str>>, Rejection> {
    const MESSAGE: &str = "The aud claim must be a string or an array of strings.";
    match claims.get("aud") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.as_str()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or(Rejection::InvalidClaimType(MESSAGE)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(Rejection::InvalidClaimType(MESSAGE)),
    }
}

/// Checks the registered claims: their JSON types whether or not a rule uses them, then
/// `exp` (required), `nbf`, `iat`, and `iss`/`aud` when the rules name them.
pub fn check_claims(claims: &Claims, rules: &ClaimRules<'_>, now: i64) -> Result<(), Rejection> {
    let exp = numeric_date(
        claims,
        "exp",
        "The exp claim must be a number (seconds since 1970).",
    )?;
    let nbf = numeric_date(
        claims,
        "nbf",
        "The nbf claim must be a number (seconds since 1970).",
    )?;
    let iat = numeric_date(
        claims,
        "iat",
        "The iat claim must be a number (seconds since 1970).",
    )?;
    let iss = string_claim(claims, "iss", "The iss claim must be a string.")?;
    let sub = string_claim(claims, "sub", "The sub claim must be a string.")?;
    let jti = string_claim(claims, "jti", "The jti claim must be a string.")?;
    // What revocation keys a token by must fit where revocations are kept: a token that could
    // not be revoked is not accepted.
    if [iss, sub, jti]
        .into_iter()
        .flatten()
        .any(|value| value.len() > MAX_ID_BYTES)
    {
        return Err(Rejection::Malformed(
            "The iss, sub and jti claims may be at most 1024 bytes long.",
        ));
    }
    let aud = audiences(claims)?;

    let now = now as f64;
    let leeway = rules.leeway as f64;
    let exp = exp.ok_or(Rejection::MissingClaim("exp"))?;
    if now >= exp + leeway {
        return Err(Rejection::Expired);
    }
    if nbf.is_some_and(|nbf| now + leeway < nbf) {
        return Err(Rejection::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now + leeway) {
        return Err(Rejection::IssuedInFuture);
    }
    if let Some(limit) = rules.max_lifetime {
        let iat = iat.ok_or(Rejection::MissingClaim("iat"))?;
        if exp - iat > limit as f64 {
            return Err(Rejection::LifetimeTooLong { limit });
        }
    }
    if let Some(issuer) = rules.issuer {
        if iss.ok_or(Rejection::MissingClaim("iss"))? != issuer {
            return Err(Rejection::WrongIssuer);
        }
    }
    if let Some(audience) = rules.audience {
        if !aud
            .ok_or(Rejection::MissingClaim("aud"))?
            .contains(&audience)
        {
            return Err(Rejection::WrongAudience);
        }
    }
    Ok(())
}
