//! Revocation rules: which stored revocations a set of claims falls under.
//!
//! Three kinds of revocation exist: a session (`session_id`, else `sid`), a single token
//! (`jti`), and a per-user cut-off ("every token of this subject issued at or before T",
//! optionally sparing one session, for "sign out everywhere else"). A cut-off holds for the
//! subject at one issuer (the tokens' `iss`), or at every issuer ([`EVERY_ISSUER`]): the same
//! `sub` at two identity providers is two users. Where the revocations are stored, and how
//! lookups are cached, is the caller's business ([`RevocationSource`]).

use serde_json::Value;

use crate::identity::{canonical_user_id, session_id, string_claim};
use crate::revocation_filter::FilterKey;
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

/// The issuer of a cut-off that holds for the subject at every issuer (also what a token
/// without `iss` signs out).
pub const EVERY_ISSUER: &str = "";

/// Where revocations are looked up.
/// Users are looked up by [`canonical_user_id`] and issuer ([`EVERY_ISSUER`] or an `iss`).
pub trait RevocationSource {
    fn session_revoked(&mut self, session_id: &[u8; 16]) -> bool;
    fn token_revoked(&mut self, jti: &str) -> bool;
    fn user_cutoff(&mut self, user_id: &str, issuer: &str) -> Option<UserCutoff>;
}

/// The keys under which a token's revocations are stored, worked out once per check.
#[derive(Debug, Clone, PartialEq)]
pub struct RevocationKeys<'c> {
    pub session: Option<[u8; 16]>,
    pub jti: Option<&'c str>,
    /// The subject in [`canonical_user_id`] form.
    pub user: Option<String>,
    /// The token's issuer (`iss`, when a non-empty string): cut-offs for the subject at that
    /// issuer apply besides those for every issuer.
    pub issuer: Option<&'c str>,
    pub iat: Option<f64>,
}

impl<'c> RevocationKeys<'c> {
    pub fn of(claims: &'c Claims) -> RevocationKeys<'c> {
        RevocationKeys {
            session: session_id(claims),
            jti: string_claim(claims, "jti"),
            user: string_claim(claims, "sub").map(canonical_user_id),
            issuer: string_claim(claims, "iss").filter(|iss| !iss.is_empty()),
            iat: claims.get("iat").and_then(Value::as_f64),
        }
    }

    /// The keys to screen in a [`RevocationFilter`](crate::revocation_filter::RevocationFilter):
    /// when none may be in it, the token is not revoked.
    pub fn filter_keys(&self) -> impl Iterator<Item = FilterKey<'_>> {
        let session = self.session.as_ref().map(FilterKey::Session);
        let user = self.user.as_deref().map(FilterKey::User);
        let token = self.jti.map(FilterKey::Token);
        [token, session, user].into_iter().flatten()
    }

    /// Whether a token with these keys falls under a revocation in `source`.
    pub fn revoked_by(&self, source: &mut impl RevocationSource) -> bool {
        if self.jti.is_some_and(|jti| source.token_revoked(jti)) {
            return true;
        }
        if self
            .session
            .is_some_and(|session| source.session_revoked(&session))
        {
            return true;
        }
        let Some(user) = self.user.as_deref() else {
            return false;
        };
        [Some(EVERY_ISSUER), self.issuer]
            .into_iter()
            .flatten()
            .filter_map(|issuer| source.user_cutoff(user, issuer))
            .any(|cutoff| cutoff.revokes(self.iat, self.session))
    }
}

/// Whether the claims fall under a revocation.
pub fn is_revoked(claims: &Claims, source: &mut impl RevocationSource) -> bool {
    RevocationKeys::of(claims).revoked_by(source)
}
