//! Every failure the extension raises, and the one place where it becomes a PostgreSQL error.
//!
//! [`Failure`] names each failure with its SQLSTATE, message, detail and hint; [`raise`] (or
//! [`Failure::raise`]) reports it. Nothing else in the extension calls `ereport`/`error!`:
//! a failure that is not one of these variants cannot be raised, so none can come out as
//! `XX000`. The two failures raised by SQL code (`auth.retire_key`'s NULL check and
//! `auth.check_request()`'s `PT401`) are variants too, so that [`SQLSTATES`] — the table the
//! README's "Errors" section must match (checked by a test) — lists every code the extension
//! can raise.

use pg_session_auth_core::{KeyError, Rejection, VerifyError};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{function_name, PgLogLevel, PgSqlErrorCode};

const ONLY_ADMINS: &str = "Only members of session_auth_admin may act on what is not their own.";

/// Every failure the extension raises.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// `28000`: a token, or the identity bound from one, is refused.
    Rejected(Rejection),
    /// `28000`: a function that acts for the caller's identity was called without one.
    NotAuthenticated { function: &'static str },
    /// `28000`: a refresh token is refused (`reason`: invalid refresh token, session
    /// expired, session timed out, session ended, refresh token reused).
    RefreshRefused { reason: &'static str },
    /// `PT401` (raised by `auth.check_request()`, in SQL): the request's token must be refused
    /// now; PostgREST answers HTTP 401. (`ErrorReport` cannot carry a code PostgreSQL does
    /// not define, so this one is raised by the SQL function.)
    #[cfg_attr(not(feature = "pg_test"), allow(dead_code))]
    RequestRefused,
    /// `55000`: no token can be accepted, because no key is active.
    NoKeyConfigured,
    /// `55000`: no signing key is in use.
    NoSigningKey,
    /// `55000`: `rotate_signing_key()` without a standby key.
    NoStandbyKey,
    /// `55000`: a setting or file the extension needs cannot be used (`what` says why).
    Misconfigured { what: String },
    /// `55000`: some of the extension's tables (`what`) were dropped or renamed by hand.
    MissingTables { what: &'static str },
    /// `55000`: the database's extension objects are older than the library
    /// (`ALTER EXTENSION … UPDATE` not yet run) and the call needs the newer ones.
    NotUpdated { what: &'static str },
    /// `55000`: the extension's own objects were altered by hand so that an internal query or
    /// trigger can no longer work (`what` says which).
    ObjectsAltered { what: String },
    /// `22023`: an argument that cannot be used.
    InvalidArgument {
        message: String,
        detail: Option<String>,
    },
    /// `22023`: key text or a JWKS that cannot be used.
    UnusableKey(KeyError),
    /// `22004`: a `NULL` where a value is required.
    NullArgument { name: &'static str },
    /// `42501`: the caller may not do this (`action`: "revoke another user's session").
    PermissionDenied {
        action: &'static str,
        only_own: bool,
    },
    /// `42501`: a client changed a request claim setting while an identity is bound.
    BoundClaimSetting,
    /// `25006`: sessions cannot be created or refreshed on a hot standby.
    ReadOnly { what: &'static str },
    /// `0A000`: `PREPARE TRANSACTION` after a revocation written in that transaction.
    PrepareAfterRevocation,
}

/// Every SQLSTATE the extension raises, with PostgreSQL's name for it.
#[cfg_attr(not(feature = "pg_test"), allow(dead_code))]
pub const SQLSTATES: &[(&str, &str)] = &[
    ("28000", "invalid_authorization_specification"),
    ("PT401", "PostgREST: HTTP 401"),
    ("55000", "object_not_in_prerequisite_state"),
    ("22023", "invalid_parameter_value"),
    ("22004", "null_value_not_allowed"),
    ("42501", "insufficient_privilege"),
    ("0A000", "feature_not_supported"),
    ("25006", "read_only_sql_transaction"),
];

impl Failure {
    /// The five-character SQLSTATE.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Failure::Rejected(_)
            | Failure::NotAuthenticated { .. }
            | Failure::RefreshRefused { .. } => "28000",
            Failure::RequestRefused => "PT401",
            Failure::NoKeyConfigured
            | Failure::NoSigningKey
            | Failure::NoStandbyKey
            | Failure::Misconfigured { .. }
            | Failure::MissingTables { .. }
            | Failure::NotUpdated { .. }
            | Failure::ObjectsAltered { .. } => "55000",
            Failure::InvalidArgument { .. } | Failure::UnusableKey(_) => "22023",
            Failure::NullArgument { .. } => "22004",
            Failure::PermissionDenied { .. } | Failure::BoundClaimSetting => "42501",
            Failure::PrepareAfterRevocation => "0A000",
            Failure::ReadOnly { .. } => "25006",
        }
    }

    /// The SQLSTATE as pgrx names it.
    pub fn error_code(&self) -> PgSqlErrorCode {
        error_code(self.sqlstate())
    }

    pub fn message(&self) -> String {
        match self {
            Failure::Rejected(rejection) => format!("invalid token: {}", rejection.reason()),
            Failure::NotAuthenticated { function } => {
                format!("{function} needs an authenticated identity")
            }
            Failure::RefreshRefused { reason } => (*reason).to_owned(),
            Failure::RequestRefused => "invalid token: <reason>".into(),
            Failure::NoSigningKey => "no signing key is in use".into(),
            Failure::NoStandbyKey => "no standby key to put in use".into(),
            Failure::Misconfigured { what } => format!("pg_session_auth: {what}"),
            Failure::ReadOnly { what } => format!("cannot {what} on a hot standby"),
            Failure::NoKeyConfigured => "no verification key is configured".into(),
            Failure::MissingTables { what } => format!("pg_session_auth: {what} missing"),
            Failure::NotUpdated { what } => {
                format!("{what} only once the extension is updated")
            }
            Failure::ObjectsAltered { what } => format!("pg_session_auth: {what}"),
            Failure::InvalidArgument { message, .. } => message.clone(),
            Failure::UnusableKey(error) => {
                let what = match error {
                    KeyError::InvalidKid => "invalid kid",
                    KeyError::InvalidJwks(_) => "invalid JWKS",
                    _ => "unusable key",
                };
                format!("{what}: {error}")
            }
            Failure::NullArgument { name } => format!("{name} must not be NULL"),
            Failure::PermissionDenied { action, .. } => format!("permission denied to {action}"),
            Failure::BoundClaimSetting => "the request's claim settings cannot be changed while auth.authenticate() has bound an identity".into(),
            Failure::PrepareAfterRevocation => {
                "cannot PREPARE a transaction that signed out or revoked through pg_session_auth"
                    .into()
            }
        }
    }

    pub fn detail(&self) -> Option<String> {
        match self {
            Failure::Rejected(rejection) => Some(rejection.detail()),
            Failure::NoKeyConfigured => {
                Some("auth.keys holds no active key, so no token can be accepted.".into())
            }
            Failure::InvalidArgument { detail, .. } => detail.clone(),
            Failure::BoundClaimSetting => Some(
                "request.jwt.claims and request.jwt.claim[.sub|.role|.email] follow the identity bound in this transaction."
                    .into(),
            ),
            _ => None,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Failure::Rejected(rejection) => rejection.hint().map(str::to_owned),
            Failure::NotAuthenticated { .. } => {
                Some("Call auth.authenticate() first in the same transaction.".into())
            }
            Failure::RequestRefused => Some("Sign in again to get a new token.".into()),
            Failure::RefreshRefused { .. } => Some("Sign in again.".into()),
            Failure::NoSigningKey => Some(
                "Generate one with auth.generate_key(), or put a standby key in use with auth.rotate_signing_key()."
                    .into(),
            ),
            Failure::NoStandbyKey => Some("Generate one first with auth.generate_key().".into()),
            Failure::ReadOnly { .. } => Some("Connect to the primary.".into()),
            Failure::NoKeyConfigured => {
                Some("Add a key with auth.add_key() or auth.import_jwks().".into())
            }
            Failure::MissingTables { .. } | Failure::ObjectsAltered { .. } => Some(
                "Create the extension again (DROP EXTENSION and CREATE EXTENSION pg_session_auth)."
                    .into(),
            ),
            Failure::NotUpdated { .. } => {
                Some("Run ALTER EXTENSION pg_session_auth UPDATE.".into())
            }
            Failure::PermissionDenied { only_own: true, .. } => Some(ONLY_ADMINS.into()),
            Failure::PrepareAfterRevocation => Some("Commit it instead.".into()),
            Failure::UnusableKey(_)
            | Failure::Misconfigured { .. }
            | Failure::InvalidArgument { .. }
            | Failure::NullArgument { .. }
            | Failure::PermissionDenied { .. }
            | Failure::BoundClaimSetting => None,
        }
    }

    /// Reports the failure as an ERROR. Never returns.
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.error_code(), self.message(), function_name!());
        if let Some(detail) = self.detail() {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("an ERROR report does not return")
    }

    /// One failure of each kind, for the test that the README documents every SQLSTATE.
    #[cfg(feature = "pg_test")]
    pub fn one_of_each() -> Vec<Failure> {
        let all = vec![
            Failure::Rejected(Rejection::BadSignature),
            Failure::NotAuthenticated { function: "f" },
            Failure::RefreshRefused { reason: "r" },
            Failure::RequestRefused,
            Failure::NoKeyConfigured,
            Failure::NoSigningKey,
            Failure::NoStandbyKey,
            Failure::Misconfigured { what: "m".into() },
            Failure::ReadOnly { what: "w" },
            Failure::MissingTables { what: "t" },
            Failure::NotUpdated { what: "w" },
            Failure::ObjectsAltered { what: "o".into() },
            Failure::InvalidArgument {
                message: "m".into(),
                detail: None,
            },
            Failure::UnusableKey(KeyError::InvalidKid),
            Failure::NullArgument { name: "n" },
            Failure::PermissionDenied {
                action: "a",
                only_own: true,
            },
            Failure::BoundClaimSetting,
            Failure::PrepareAfterRevocation,
        ];
        // Names every variant, so a new one does not compile until it is listed above.
        for failure in &all {
            match failure {
                Failure::Rejected(_)
                | Failure::NotAuthenticated { .. }
                | Failure::RefreshRefused { .. }
                | Failure::RequestRefused
                | Failure::NoKeyConfigured
                | Failure::NoSigningKey
                | Failure::NoStandbyKey
                | Failure::Misconfigured { .. }
                | Failure::ReadOnly { .. }
                | Failure::MissingTables { .. }
                | Failure::NotUpdated { .. }
                | Failure::ObjectsAltered { .. }
                | Failure::InvalidArgument { .. }
                | Failure::UnusableKey(_)
                | Failure::NullArgument { .. }
                | Failure::PermissionDenied { .. }
                | Failure::BoundClaimSetting
                | Failure::PrepareAfterRevocation => {}
            }
        }
        all
    }
}

impl From<VerifyError> for Failure {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Rejected(rejection) => Failure::Rejected(rejection),
            VerifyError::NoKeyConfigured => Failure::NoKeyConfigured,
        }
    }
}

/// Raises `failure`. Never returns.
pub fn raise(failure: impl Into<Failure>) -> ! {
    failure.into().raise()
}

/// A required argument; NULL is refused with `22004`, never passed through as "nothing".
pub fn required<T>(value: Option<T>, name: &'static str) -> T {
    value.unwrap_or_else(|| raise(Failure::NullArgument { name }))
}

/// `22023` with a message (and a detail).
pub fn invalid_argument(message: impl Into<String>, detail: Option<String>) -> Failure {
    Failure::InvalidArgument {
        message: message.into(),
        detail,
    }
}

/// PostgreSQL's packed form of a five-character SQLSTATE (its `MAKE_SQLSTATE`).
pub fn error_code(sqlstate: &str) -> PgSqlErrorCode {
    let packed = sqlstate.bytes().enumerate().fold(0i32, |code, (i, ch)| {
        code + (((i32::from(ch) - i32::from(b'0')) & 0x3F) << (6 * i))
    });
    PgSqlErrorCode::from(packed)
}

impl From<Rejection> for Failure {
    fn from(rejection: Rejection) -> Self {
        Failure::Rejected(rejection)
    }
}
