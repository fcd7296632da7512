//! The one place where core errors become PostgreSQL errors, each with a deliberate SQLSTATE.
//!
//! | error                         | SQLSTATE                                  |
//! |-------------------------------|-------------------------------------------|
//! | token rejected (any reason)   | 28000 invalid_authorization_specification |
//! | no active key configured      | 55000 object_not_in_prerequisite_state    |
//! | unusable key or bad argument  | 22023 invalid_parameter_value             |

use pg_session_auth_core::{KeyError, VerifyError};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{function_name, PgLogLevel, PgSqlErrorCode};

/// Raises a failed verification as an ERROR. Never returns.
pub fn raise_verify_error(error: &VerifyError) -> ! {
    let report = match error {
        VerifyError::Rejected(rejection) => {
            let report = ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                format!("invalid token: {}", rejection.reason()),
                function_name!(),
            )
            .set_detail(rejection.detail());
            match rejection.hint() {
                Some(hint) => report.set_hint(hint),
                None => report,
            }
        }
        VerifyError::NoKeyConfigured => ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "no verification key is configured",
            function_name!(),
        )
        .set_detail("auth.keys holds no active key, so no token can be accepted.")
        .set_hint("Add a key with auth.add_key() or auth.import_jwks()."),
    };
    report.report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// Raises an unusable key (or other bad argument) as `22023`. Never returns.
pub fn raise_invalid_parameter(message: impl Into<String>, detail: Option<String>) -> ! {
    let report = ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message.into(),
        function_name!(),
    );
    let report = match detail {
        Some(detail) => report.set_detail(detail),
        None => report,
    };
    report.report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

pub fn raise_key_error(error: &KeyError) -> ! {
    let what = match error {
        KeyError::InvalidKid => "invalid kid",
        KeyError::InvalidJwks(_) => "invalid JWKS",
        _ => "unusable key",
    };
    raise_invalid_parameter(format!("{what}: {error}"), None)
}

/// Raises `message` with `code` (and a hint). Never returns.
pub fn raise(code: PgSqlErrorCode, message: &str, hint: Option<&str>) -> ! {
    let report = ErrorReport::new(code, message.to_owned(), function_name!());
    let report = match hint {
        Some(hint) => report.set_hint(hint.to_owned()),
        None => report,
    };
    report.report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// A required argument; NULL is refused with `22004`, never passed through as "nothing".
pub fn required<T>(value: Option<T>, name: &str) -> T {
    value.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            &format!("{name} must not be NULL"),
            None,
        )
    })
}

/// Some of the extension's tables (`what`: "the revocation tables", "auth.keys") are gone,
/// dropped by hand: `55000`, never "nothing to check".
pub fn raise_missing_tables(what: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        &format!("pg_session_auth: {what} missing"),
        Some("Create the extension again (DROP EXTENSION and CREATE EXTENSION pg_session_auth)."),
    )
}
