//! The access tokens issued with a session: Supabase's claims, signed with the key in use.

use pg_session_auth_core::signing::random_bytes;
use serde_json::{json, Map, Value};

use crate::errors::{invalid_argument, raise};
use crate::gucs;
use crate::signing_keys;

/// Claims the caller's extra claims may not set: they are the session's.
pub const RESERVED_CLAIMS: [&str; 11] = [
    "sub",
    "aud",
    "iss",
    "iat",
    "exp",
    "nbf",
    "jti",
    "session_id",
    "aal",
    "amr",
    "reauth_required",
];

/// What a session's access token says about it.
pub struct SessionClaims<'a> {
    pub user_id: &'a str,
    pub session_id: &'a str,
    pub aal: &'a str,
    pub amr: &'a Value,
    pub extra: &'a Map<String, Value>,
    /// A rule asked the session to step up (`"reauth_required": true` until it does).
    pub reauth_required: bool,
}

/// A signed access token.
pub struct Issued {
    pub access_token: String,
    /// `exp`, in Unix seconds.
    pub expires_at: i64,
    pub expires_in: i32,
}

/// `22023` when extra claims try to set a reserved one.
pub fn check_extra_claims(extra: &Map<String, Value>) {
    if let Some(name) = RESERVED_CLAIMS
        .iter()
        .find(|name| extra.contains_key(**name))
    {
        raise(invalid_argument(
            format!("claims may not set \"{name}\""),
            Some(format!(
                "These claims are the session's: {}.",
                RESERVED_CLAIMS.join(", ")
            )),
        ));
    }
}

/// A random (version 4) UUID, as text.
pub fn random_uuid() -> [u8; 16] {
    let mut bytes = random_bytes::<16>();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}

pub fn uuid_text(bytes: &[u8; 16]) -> String {
    pgrx::Uuid::from_bytes(*bytes).to_string()
}

/// A time to the microsecond, as a JSON number of seconds (`iat` so: a token issued right
/// after a sign-out is later than its cut-off).
fn issued_at(now_micros: i64) -> Value {
    let seconds = now_micros.div_euclid(1_000_000);
    let micros = now_micros.rem_euclid(1_000_000);
    if micros == 0 {
        json!(seconds)
    } else {
        json!(seconds as f64 + micros as f64 / 1_000_000.0)
    }
}

/// Signs `claims` with the key in use, adding `iat`, `exp` (both µs since the Unix epoch,
/// written as seconds), `jti` and `iss`.
pub fn sign(mut claims: Map<String, Value>, now_micros: i64, expires_micros: i64) -> String {
    claims.insert("iat".into(), issued_at(now_micros));
    claims.insert("exp".into(), issued_at(expires_micros));
    claims.insert("jti".into(), json!(uuid_text(&random_uuid())));
    if let Some(issuer) = gucs::issuer() {
        claims.insert("iss".into(), json!(issuer));
    }
    let key = signing_keys::key_in_use();
    key.key
        .sign(&key.kid, &claims)
        .unwrap_or_else(|error| raise(crate::errors::Failure::UnusableKey(error)))
}

/// The access token of a session at `now`, expiring after the configured lifetime but never
/// after `session_end` (µs).
pub fn issue(session: &SessionClaims<'_>, now_micros: i64, session_end: Option<i64>) -> Issued {
    let lifetime_end = now_micros.saturating_add(gucs::session_limits().access_token_lifetime);
    let end = session_end.map_or(lifetime_end, |end| end.min(lifetime_end));
    let expires_at = end.div_euclid(1_000_000);
    let mut claims = session.extra.clone();
    claims.insert("sub".into(), json!(session.user_id));
    claims
        .entry("role")
        .or_insert_with(|| json!("authenticated"));
    claims.insert(
        "aud".into(),
        json!(gucs::audience().unwrap_or_else(|| "authenticated".into())),
    );
    claims.insert("session_id".into(), json!(session.session_id));
    claims.insert("aal".into(), json!(session.aal));
    claims.insert("amr".into(), session.amr.clone());
    claims.entry("is_anonymous").or_insert_with(|| json!(false));
    if session.reauth_required {
        claims.insert("reauth_required".into(), json!(true));
    }
    let access_token = sign(claims, now_micros, expires_at * 1_000_000);
    let expires_in = expires_at - now_micros.div_euclid(1_000_000);
    Issued {
        access_token,
        expires_at,
        expires_in: i32::try_from(expires_in.max(0)).unwrap_or(i32::MAX),
    }
}
