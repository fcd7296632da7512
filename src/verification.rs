//! One verification as the SQL functions perform it: the trusted settings, the statement's
//! clock and the cached keyring, handed to the core.

use pg_session_auth_core::identity::{session_id, string_claim};
use pg_session_auth_core::{
    verify_reporting, ClaimRules, Claims, KeyRef, Policy, Rejection, VerifyError,
};

use crate::activity::rejections::{self, Reason, Refused};
use crate::activity::stats::{self, Stat};

use crate::errors::raise;
use crate::pg::clock;
use crate::{gucs, keyring, revocation};

/// The clock of every check, in Unix seconds: when the current statement started, or when
/// the current transaction did if that is later. Every check in one statement uses the same
/// clock and a new statement sees time move on; inside a procedure or `DO` block that
/// commits, the statement (`CALL`) never ends but each new transaction starts at the real
/// time, so a token expires there too. Parallel workers get both times from their leader.
pub fn check_time() -> i64 {
    clock::unix_seconds(clock::statement_start().max(clock::transaction_start()))
}

/// Verifies `token` (signature, claims, then revocation) or raises the documented error. A
/// NULL token is a malformed one: no caller may read a NULL result as "no identity, carry on".
/// Returns the claims and the key that verified them.
pub fn verify_or_raise(token: Option<&str>) -> (Claims, KeyRef) {
    let Some(token) = token else {
        raise(Rejection::Malformed("The token is NULL."));
    };
    let issuer = gucs::issuer();
    let audience = gucs::audience();
    let policy = Policy {
        max_token_bytes: gucs::max_token_bytes(),
        claims: ClaimRules {
            leeway: gucs::leeway(),
            issuer: issuer.as_deref(),
            audience: audience.as_deref(),
            max_lifetime: gucs::max_token_lifetime(),
        },
    };
    let now = check_time();
    stats::count(Stat::Verifications);
    let (claims, key) =
        match keyring::with_keyring(|keys| verify_reporting(token, keys, &policy, now)) {
            Ok(verified) => verified,
            Err((error, refused)) => {
                let rejection = match &error {
                    VerifyError::Rejected(rejection) => Some(rejection),
                    VerifyError::NoKeyConfigured => None,
                };
                record(
                    rejection,
                    refused.kid.as_deref(),
                    refused.signed_claims.as_ref(),
                );
                raise(error)
            }
        };
    if revocation::claims_revoked(&claims) {
        record_rejection(&Rejection::Revoked, Some(&key.kid), Some(&claims));
        raise(Rejection::Revoked);
    }
    (claims, key)
}

/// Counts and records a token's rejection (`activity/rejections.rs`); `claims` only when
/// the signature was good.
pub fn record_rejection(rejection: &Rejection, kid: Option<&str>, claims: Option<&Claims>) {
    record(Some(rejection), kid, claims);
}

/// [`record_rejection`]; `None`: no key is configured.
fn record(rejection: Option<&Rejection>, kid: Option<&str>, claims: Option<&Claims>) {
    let reason = rejection.map_or_else(|| "no key configured".to_owned(), Rejection::reason);
    rejections::rejected(Refused {
        reason: Reason::of_token(&reason),
        kid,
        subject: claims.and_then(|claims| string_claim(claims, "sub")),
        issuer: claims.and_then(|claims| string_claim(claims, "iss")),
        session: claims.and_then(session_id),
        ip: rejections::request_address(),
    });
}
