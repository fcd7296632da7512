//! One verification as the SQL functions perform it: the trusted settings, the statement's
//! clock and the cached keyring, handed to the core.

use pg_session_auth_core::{verify, ClaimRules, Claims, Policy, Rejection, VerifyError};
use pgrx::pg_sys;

use crate::{errors, gucs, keyring, revocation};

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_UNIX_SECONDS: i64 = 946_684_800;

/// The current statement's start time, in Unix seconds: every check in one statement uses
/// the same clock, and a new statement sees time move on.
pub fn statement_time() -> i64 {
    let micros = unsafe { pg_sys::GetCurrentStatementStartTimestamp() };
    micros.div_euclid(1_000_000) + POSTGRES_EPOCH_UNIX_SECONDS
}

/// Verifies `token` (signature, claims, then revocation) or raises the documented error. A NULL token is a malformed one: no
/// caller may read a NULL result as "no identity, carry on".
pub fn verify_or_raise(token: Option<&str>) -> Claims {
    let Some(token) = token else {
        errors::raise_verify_error(&VerifyError::Rejected(Rejection::Malformed(
            "The token is NULL.",
        )));
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
    let now = statement_time();
    let claims = match keyring::with_keyring(|keys| verify(token, keys, &policy, now)) {
        Ok(claims) => claims,
        Err(error) => errors::raise_verify_error(&error),
    };
    if revocation::claims_revoked(&claims) {
        errors::raise_verify_error(&VerifyError::Rejected(Rejection::Revoked));
    }
    claims
}
