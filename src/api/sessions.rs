//! Sessions: sign-in (`session_auth_issuer`, admins), refresh (everyone: the refresh token is
//! the credential), devices and ending (the authenticated user for their own sessions,
//! admins for anyone's). Privileges beyond EXECUTE are checked here.

use pg_session_auth_core::identity::{self, canonical_user_id};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::{Inet, Uuid};

use crate::api::revocation::caller_is_admin;
use crate::api::signing::interval_micros;
use crate::errors::{raise, required, Failure};
use crate::identity::current_claims;
use crate::jsonb::JsonbArgument;
use crate::sessions::{self, cookie, Ending, SignIn, TokenResponse};

// pgrx reads a #[pg_extern]'s return type before macro or alias expansion: the row types
// are spelled out in each signature (hence the type_complexity allowances).
#[allow(clippy::type_complexity)]
fn token_row(
    response: TokenResponse,
) -> TableIterator<
    'static,
    (
        name!(access_token, String),
        name!(token_type, String),
        name!(expires_in, i32),
        name!(expires_at, i64),
        name!(refresh_token, Option<String>),
        name!(session_id, Uuid),
    ),
> {
    TableIterator::once((
        response.access_token,
        "bearer".to_owned(),
        response.expires_in,
        response.expires_at,
        response.refresh_token,
        Uuid::from_bytes(response.session_id),
    ))
}

/// `auth.create_session(user_id, claims, …)`: starts a session; returns its first pair.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::type_complexity)]
fn create_session(
    user_id: Option<&str>,
    claims: default!(Option<JsonbArgument>, "'{}'"),
    user_agent: default!(Option<&str>, "NULL"),
    ip: default!(Option<Inet>, "NULL"),
    aal: default!(Option<&str>, "'aal1'"),
    amr: default!(Option<JsonbArgument>, "NULL"),
    tag: default!(Option<&str>, "NULL"),
    not_after: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(access_token, String),
        name!(token_type, String),
        name!(expires_in, i32),
        name!(expires_at, i64),
        name!(refresh_token, Option<String>),
        name!(session_id, Uuid),
    ),
> {
    let claims = required(claims, "claims").object_or_raise("claims");
    token_row(sessions::create(SignIn {
        user_id: required(user_id, "user_id"),
        claims,
        user_agent,
        ip,
        aal: required(aal, "aal"),
        amr: amr.map(|amr| amr.value_or_raise("amr")),
        tag,
        not_after,
    }))
}

/// `auth.refresh_session(refresh_token, user_agent, ip)`: a new pair for a refresh token.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn refresh_session(
    refresh_token: Option<&str>,
    user_agent: default!(Option<&str>, "NULL"),
    ip: default!(Option<Inet>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(access_token, String),
        name!(token_type, String),
        name!(expires_in, i32),
        name!(expires_at, i64),
        name!(refresh_token, Option<String>),
        name!(session_id, Uuid),
    ),
> {
    let Some(token) = refresh_token else {
        raise(Failure::RefreshRefused {
            reason: sessions::refusal::INVALID,
        })
    };
    token_row(sessions::refresh(token, user_agent, ip))
}

/// `auth.refresh_session_cookie()`: the same, with the refresh token in PostgREST's
/// `request.cookies`, the new one set as an HTTP-only cookie.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn refresh_session_cookie() -> TableIterator<
    'static,
    (
        name!(access_token, String),
        name!(token_type, String),
        name!(expires_in, i32),
        name!(expires_at, i64),
        name!(refresh_token, Option<String>),
        name!(session_id, Uuid),
    ),
> {
    token_row(cookie::refresh_from_cookie())
}

/// Whose sessions the caller may see and end: the bound identity's subject at its issuer.
/// Read through the claim functions' checks, so a revoked or retired identity is refused
/// (`28000`) rather than allowed to manage the user's devices.
struct Own {
    user_id: String,
    issuer: String,
    session: Option<[u8; 16]>,
}

fn own_identity() -> Option<Own> {
    let claims = current_claims()?;
    Some(Own {
        user_id: canonical_user_id(identity::string_claim(&claims, "sub")?),
        issuer: identity::string_claim(&claims, "iss")
            .unwrap_or_default()
            .to_owned(),
        session: identity::session_id(&claims),
    })
}

fn require_own_identity(function: &'static str) -> Own {
    own_identity().unwrap_or_else(|| raise(Failure::NotAuthenticated { function }))
}

/// `auth.update_session_aal(aal, amr, session_id)`: after the app's MFA check, raises the
/// session's level (the bound identity's session, or `session_id`) and returns a new pair.
/// `session_auth_issuer` and admins only: a user may not raise their own level.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn update_session_aal(
    aal: Option<&str>,
    amr: default!(Option<JsonbArgument>, "NULL"),
    session_id: default!(Option<Uuid>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(access_token, String),
        name!(token_type, String),
        name!(expires_in, i32),
        name!(expires_at, i64),
        name!(refresh_token, Option<String>),
        name!(session_id, Uuid),
    ),
> {
    let aal = required(aal, "aal");
    let session = match session_id {
        Some(session) => *session.as_bytes(),
        None => require_own_identity("auth.update_session_aal()")
            .session
            .unwrap_or_else(|| {
                raise(Failure::NotAuthenticated {
                    function: "auth.update_session_aal()",
                })
            }),
    };
    token_row(sessions::step_up(
        session,
        aal,
        amr.map(|amr| amr.value_or_raise("amr")),
    ))
}

#[allow(clippy::type_complexity)]
fn devices(
    user_id: &str,
    issuer: Option<&str>,
    current: Option<[u8; 16]>,
) -> TableIterator<
    'static,
    (
        name!(session_id, Uuid),
        name!(created_at, TimestampWithTimeZone),
        name!(refreshed_at, Option<TimestampWithTimeZone>),
        name!(user_agent, Option<String>),
        name!(ip, Option<Inet>),
        name!(aal, String),
        name!(tag, Option<String>),
        name!(not_after, Option<TimestampWithTimeZone>),
        name!(is_current, bool),
    ),
> {
    TableIterator::new(
        sessions::list(user_id, issuer)
            .into_iter()
            .map(move |device| {
                (
                    Uuid::from_bytes(device.session_id),
                    device.created_at,
                    device.refreshed_at,
                    device.user_agent,
                    device.ip,
                    device.aal,
                    device.tag,
                    device.not_after,
                    Some(device.session_id) == current,
                )
            }),
    )
}

/// `auth.list_sessions()`: the authenticated user's active sessions.
#[pg_extern(stable, parallel_restricted, name = "list_sessions")]
#[allow(clippy::type_complexity)]
fn list_own_sessions() -> TableIterator<
    'static,
    (
        name!(session_id, Uuid),
        name!(created_at, TimestampWithTimeZone),
        name!(refreshed_at, Option<TimestampWithTimeZone>),
        name!(user_agent, Option<String>),
        name!(ip, Option<Inet>),
        name!(aal, String),
        name!(tag, Option<String>),
        name!(not_after, Option<TimestampWithTimeZone>),
        name!(is_current, bool),
    ),
> {
    let own = require_own_identity("auth.list_sessions()");
    devices(&own.user_id, Some(&own.issuer), own.session)
}

/// `auth.list_sessions(user_id)`: a user's active sessions (admins; anyone for themselves).
#[pg_extern(stable, parallel_restricted, name = "list_sessions")]
#[allow(clippy::type_complexity)]
fn list_user_sessions(
    user_id: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(session_id, Uuid),
        name!(created_at, TimestampWithTimeZone),
        name!(refreshed_at, Option<TimestampWithTimeZone>),
        name!(user_agent, Option<String>),
        name!(ip, Option<Inet>),
        name!(aal, String),
        name!(tag, Option<String>),
        name!(not_after, Option<TimestampWithTimeZone>),
        name!(is_current, bool),
    ),
> {
    let user_id = canonical_user_id(required(user_id, "user_id"));
    if caller_is_admin() {
        return devices(&user_id, None, None);
    }
    match own_identity() {
        Some(own) if own.user_id == user_id => devices(&user_id, Some(&own.issuer), own.session),
        _ => raise(Failure::PermissionDenied {
            action: "list another user's sessions",
            only_own: true,
        }),
    }
}

/// `auth.end_session(session_id)`: ends one of your own sessions (admins: anyone's). True
/// when it ended now; false when it had ended before or does not exist.
#[pg_extern(volatile, parallel_unsafe)]
fn end_session(session_id: Option<Uuid>) -> bool {
    let session = *required(session_id, "session_id").as_bytes();
    let admin = caller_is_admin();
    let Some((user_id, issuer)) = sessions::owner_of(session) else {
        if admin {
            return false;
        }
        raise(Failure::PermissionDenied {
            action: "end another user's session",
            only_own: true,
        })
    };
    let own =
        !admin && own_identity().is_some_and(|own| own.user_id == user_id && own.issuer == issuer);
    if !own && !admin {
        raise(Failure::PermissionDenied {
            action: "end another user's session",
            only_own: true,
        });
    }
    crate::revocation::note_revocation_written();
    !sessions::end_sessions(Ending::Session(session), "ended", serde_json::json!({})).is_empty()
}

/// `auth.purge_sessions(older_than)`: deletes sessions that ended or expired more than
/// `older_than` ago; returns how many. Admins only.
#[pg_extern(volatile, parallel_unsafe)]
fn purge_sessions(older_than: default!(Option<Interval>, "'1 day'")) -> i64 {
    let older_than = interval_micros(&required(older_than, "older_than")).max(0);
    sessions::purge(older_than as f64 / 1_000_000.0)
}
