//! The refresh token in an HTTP-only cookie, for PostgREST deployments: read from
//! `request.cookies`, written as a `Set-Cookie` header through `response.headers` — the two
//! settings PostgREST maps to and from HTTP — so browser code never sees the token.

use std::ffi::{CStr, CString};

use pgrx::guc::GucContext;
use serde_json::{json, Map, Value};

use super::{refresh, refusal, refuse, TokenResponse};
use crate::errors::{raise, Failure};
use crate::gucs;
use crate::pg::{clock, settings};

const REQUEST_COOKIES: &CStr = c"request.cookies";
const REQUEST_HEADERS: &CStr = c"request.headers";
const RESPONSE_HEADERS: &CStr = c"response.headers";
/// Browsers keep a cookie at most 400 days.
const UNBOUNDED_MAX_AGE: i64 = 400 * 24 * 3600;

/// A JSON object held by a setting PostgREST sets (absent or unreadable: none).
fn setting_object(name: &CStr) -> Option<Map<String, Value>> {
    let text = settings::value(name)?;
    match serde_json::from_slice(&text) {
        Ok(Value::Object(object)) => Some(object),
        _ => None,
    }
}

/// A cookie name or path as configured: no separators, spaces or control characters,
/// which would let a setting inject other attributes or headers.
fn cookie_part(value: String, what: &str) -> String {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, ';' | ',' | '"' | '\\'))
        || (what == "name" && value.contains('='))
    {
        raise(Failure::Misconfigured {
            what: format!("the refresh cookie's {what} {value:?} cannot be used in a cookie"),
        });
    }
    value
}

/// Appends a `Set-Cookie` header to `response.headers` (a JSON array of one-member objects,
/// as PostgREST reads it), keeping headers set before.
fn set_cookie(value: &str, max_age: i64) {
    let name = cookie_part(gucs::refresh_cookie(), "name");
    let path = cookie_part(gucs::refresh_cookie_path(), "path");
    let header =
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax");
    let mut headers = match settings::value(RESPONSE_HEADERS)
        .and_then(|text| serde_json::from_slice::<Value>(&text).ok())
    {
        Some(Value::Array(headers)) => headers,
        _ => Vec::new(),
    };
    headers.push(json!({ "Set-Cookie": header }));
    let text = CString::new(Value::Array(headers).to_string()).expect("JSON text has no NUL byte");
    settings::set_local(RESPONSE_HEADERS, &text, GucContext::Userset);
}

/// `auth.refresh_session_cookie()`: refreshes with the token in the request's cookie and
/// sets the new one as a cookie; the response carries no refresh token.
pub fn refresh_from_cookie() -> TokenResponse {
    let name = gucs::refresh_cookie();
    let token = setting_object(REQUEST_COOKIES)
        .and_then(|cookies| cookies.get(&name)?.as_str().map(str::to_owned))
        .unwrap_or_else(|| refuse(refusal::INVALID));
    let agent = setting_object(REQUEST_HEADERS)
        .and_then(|headers| headers.get("user-agent")?.as_str().map(str::to_owned));
    let mut response = refresh(&token, agent.as_deref(), None);
    let max_age = response.session_end.map_or(UNBOUNDED_MAX_AGE, |end| {
        (end - clock::now_unix_micros()).max(0) / 1_000_000
    });
    let refresh_token = response
        .refresh_token
        .take()
        .expect("a refresh returns a refresh token");
    set_cookie(&refresh_token, max_age);
    response
}

/// On sign-out through PostgREST (its request settings are present): clears the cookie.
pub fn clear_if_requested_over_http() {
    if settings::value(REQUEST_COOKIES).is_some() {
        set_cookie("", 0);
    }
}
