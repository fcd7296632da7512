//! What the claim functions read from a set of claims, and which database role a token may
//! assume. Pure functions over [`Claims`]; the extension decides where the claims come from.

use serde_json::Value;

use crate::error::Rejection;
use crate::Claims;

/// A claim as text; `None` when missing, not a string, or empty (as Supabase's helpers treat
/// an empty `request.jwt.claim.*` setting).
pub fn string_claim<'c>(claims: &'c Claims, name: &str) -> Option<&'c str> {
    claims.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// `sub` parsed as a UUID; `None` when missing or not a UUID.
pub fn uid(claims: &Claims) -> Option<[u8; 16]> {
    string_claim(claims, "sub").and_then(parse_uuid)
}

/// The session id: the `session_id` claim (Supabase), else `sid` (OpenID Connect).
pub fn session_id(claims: &Claims) -> Option<[u8; 16]> {
    string_claim(claims, "session_id")
        .or_else(|| string_claim(claims, "sid"))
        .and_then(parse_uuid)
}

pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    uuid::Uuid::try_parse(text).ok().map(|u| u.into_bytes())
}

/// Whether claims that were valid when bound have expired at `now` (same rule as
/// verification: expired once `now >= exp + leeway`; no `exp` counts as expired).
pub fn has_expired(claims: &Claims, now: i64, leeway: i64) -> bool {
    match claims.get("exp").and_then(Value::as_f64) {
        Some(exp) => now as f64 >= exp + leeway as f64,
        None => true,
    }
}

/// Which roles a token may ask for, and where it asks.
#[derive(Debug, Clone)]
pub struct RolePolicy<'a> {
    /// The claim holding the role name (PostgREST's `role`).
    pub claim: &'a str,
    /// Role names a token may name, exactly as written.
    pub allowed: Vec<&'a str>,
}

impl<'a> RolePolicy<'a> {
    /// Reads a comma-separated list of role names (spaces around names are ignored).
    pub fn new(claim: &'a str, allowed_list: &'a str) -> RolePolicy<'a> {
        let allowed = allowed_list.split(',').map(str::trim).filter(|name| !name.is_empty()).collect();
        RolePolicy { claim, allowed }
    }

    /// The role the token asks to run as: `Ok(None)` when it names none, the name when it
    /// is on the allowed list, and a rejection otherwise (not a string, empty, not listed).
    pub fn requested_role<'c>(&self, claims: &'c Claims) -> Result<Option<&'c str>, Rejection> {
        match claims.get(self.claim) {
            None => Ok(None),
            Some(Value::String(name)) if self.allowed.contains(&name.as_str()) => Ok(Some(name)),
            Some(Value::String(name)) => Err(Rejection::RoleNotAllowed(name.clone())),
            Some(_) => Err(Rejection::InvalidClaimType("The role claim must be a string.")),
        }
    }
}
