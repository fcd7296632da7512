//! One verification as the SQL functions perform it: the trusted settings, the statement's
//! clock and the cached keyring, handed to the core.

use pg_session_auth_core::{verify_with_key, ClaimRules, Claims, KeyRef, Policy, Rejection};

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
    let (claims, key) =
        match keyring::with_keyring(|keys| verify_with_key(token, keys, &policy, now)) {
            Ok(verified) => verified,
            Err(error) => raise(error),
        };
    if revocation::claims_revoked(&claims) {
        raise(Rejection::Revoked);
    }
    (claims, key)
}
