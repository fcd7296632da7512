//! Revocation rules: which stored revocations a set of claims falls under.
//!
//! Three kinds of revocation exist: a session (`session_id`, else `sid`), a single token
//! (`jti`), and a per-user cut-off ("every token of this subject issued at or before T",
//! optionally sparing one session, for "sign out everywhere else"). Where the revocations are
//! stored, and how lookups are cached, is the caller's business ([`RevocationSource`]).

use serde_json::Value;

use crate::identity::{canonical_user_id, session_id, string_claim};
use crate::Claims;

/// A user's cut-offs (Unix seconds): tokens issued at or before them are revoked.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UserCutoff {
    /// Every session of the user ("sign out everywhere").
    pub revoked_before: Option<f64>,
    /// Every session but `keep_session` ("sign out everywhere else").
    pub others_revoked_before: Option<f64>,
    pub keep_session: Option<[u8; 16]>,
}

impl UserCutoff {
    /// Whether a token with this `iat` and session falls under the cut-offs. A token without
    /// `iat` cannot show it was issued after them, so any applicable cut-off revokes it.
    pub fn revokes(&self, iat: Option<f64>, session: Option<[u8; 16]>) -> bool {
        let spared = self.keep_session.is_some() && self.keep_session == session;
        let applicable = [
            self.revoked_before,
            if spared {
                None
            } else {
                self.others_revoked_before
            },
        ];
        applicable
            .into_iter()
            .flatten()
            .any(|cutoff| iat.is_none_or(|iat| iat <= cutoff))
    }
}

/// Where revocations are looked up.
/// Users are looked up by [`canonical_user_id`].
pub trait RevocationSource {
    fn session_revoked(&mut self, session_id: &[u8; 16]) -> bool;
    fn token_revoked(&mut self, jti: &str) -> bool;
    fn user_cutoff(&mut self, user_id: &str) -> Option<UserCutoff>;
}

/// Whether the claims fall under a revocation.
pub fn is_revoked(claims: &Claims, source: &mut impl RevocationSource) -> bool {
    if string_claim(claims, "jti").is_some_and(|jti| source.token_revoked(jti)) {
        return true;
    }
    let session = session_id(claims);
    if session.is_some_and(|session| source.session_revoked(&session)) {
        return true;
    }
    string_claim(claims, "sub")
        .and_then(|sub| source.user_cutoff(&canonical_user_id(sub)))
        .is_some_and(|cutoff| cutoff.revokes(claims.get("iat").and_then(Value::as_f64), session))
}
