//! What the claim functions read from a set of claims, and which database role a token may
//! assume. Pure functions over [`Claims`]; the extension decides where the claims come from.

use serde_json::Value;

use crate::error::Rejection;
use crate::Claims;

/// A claim that is a non-empty string; `None` otherwise. Used where a claim identifies
/// something (a subject, a session, a token id).
pub fn string_claim<'c>(claims: &'c Claims, name: &str) -> Option<&'c str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A claim as SQL's `claims ->> name` gives it (what Supabase's helpers return): a string
/// as is (also when empty), `null` or a missing claim as `None`, anything else as its JSON
/// text.
pub fn claim_as_text(claims: &Claims, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
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

/// The form a subject is stored and looked up in for revocation: a UUID in PostgreSQL's
/// canonical text form (so `ABC…` and `{abc…}` are one subject, as they are to `auth.uid()`),
/// anything else as it is.
pub fn canonical_user_id(sub: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let Some(bytes) = parse_uuid(sub) else {
        return sub.to_owned();
    };
    let mut text = String::with_capacity(36);
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(HEX[usize::from(byte >> 4)] as char);
        text.push(HEX[usize::from(byte & 0xf)] as char);
    }
    text
}

/// Parses a UUID exactly as PostgreSQL's `uuid` input does: 32 hex digits, optionally in
/// braces, with a hyphen allowed after any group of four digits (except the last).
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let mut rest = text.as_bytes();
    let braces = rest.first() == Some(&b'{');
    if braces {
        rest = &rest[1..];
    }
    let mut bytes = [0u8; 16];
    for (index, byte) in bytes.iter_mut().enumerate() {
        let [high, low, tail @ ..] = rest else {
            return None;
        };
        let digit = |c: &u8| (*c as char).to_digit(16);
        *byte = (digit(high)? * 16 + digit(low)?) as u8;
        rest = tail;
        if index % 2 == 1 && index < 15 && rest.first() == Some(&b'-') {
            rest = &rest[1..];
        }
    }
    if braces {
        rest = rest.strip_prefix(b"}")?;
    }
    rest.is_empty().then_some(bytes)
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
        let allowed = allowed_list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .collect();
        RolePolicy { claim, allowed }
    }

    /// The role the token asks to run as: `Ok(None)` when it names none, the name when it
    /// is on the allowed list, and a rejection otherwise (not a string, empty, not listed).
    pub fn requested_role<'c>(&self, claims: &'c Claims) -> Result<Option<&'c str>, Rejection> {
        match claims.get(self.claim) {
            None => Ok(None),
            Some(Value::String(name)) if self.allowed.contains(&name.as_str()) => Ok(Some(name)),
            Some(Value::String(name)) => Err(Rejection::RoleNotAllowed(name.clone())),
            Some(_) => Err(Rejection::InvalidClaimType(
                "The role claim must be a string.",
            )),
        }
    }
}

/// Whether any string of the claims, names included, holds U+0000 (which `jsonb` cannot
/// store and which SQL casts would cut text at).
pub fn contains_nul(claims: &Claims) -> bool {
    fn value_has_nul(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(value_has_nul),
            serde_json::Value::Object(object) => contains_nul(object),
            _ => false,
        }
    }
    claims
        .iter()
        .any(|(name, value)| name.contains('\0') || value_has_nul(value))
}
