//! Every `pg_session_auth.*` setting. Each decides what is trusted, so each is `SUSET`: only a
//! superuser (or a role granted `SET` on it) may change it, in a session, per role/database,
//! or in postgresql.conf. `NO_RESET_ALL` keeps a client's `RESET ALL`/`DISCARD ALL` from
//! dropping a value a superuser set for the session.

use std::ffi::CString;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
pub static LEEWAY: GucSetting<i32> = GucSetting::<i32>::new(30);
/// When set, a token's `iss` must equal it.
pub static ISSUER: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// When set, a token's `aud` must contain it.
pub static AUDIENCE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Tokens longer than this many bytes are rejected before any parsing.
pub static MAX_TOKEN_BYTES: GucSetting<i32> = GucSetting::<i32>::new(8192);

const TRUST_FLAGS: GucFlags = GucFlags::NO_RESET_ALL;

pub fn register() {
    GucRegistry::define_int_guc(
        c"pg_session_auth.leeway",
        c"Seconds of clock skew tolerated when checking exp, nbf and iat.",
        c"",
        &LEEWAY,
        0,
        3600,
        GucContext::Suset,
        TRUST_FLAGS | GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"pg_session_auth.issuer",
        c"Required value of the iss claim; empty means any issuer.",
        c"",
        &ISSUER,
        GucContext::Suset,
        TRUST_FLAGS,
    );
    GucRegistry::define_string_guc(
        c"pg_session_auth.audience",
        c"Value the aud claim must contain; empty means any audience.",
        c"",
        &AUDIENCE,
        GucContext::Suset,
        TRUST_FLAGS,
    );
    GucRegistry::define_int_guc(
        c"pg_session_auth.max_token_bytes",
        c"Longest token accepted, in bytes; longer ones are rejected before parsing.",
        c"",
        &MAX_TOKEN_BYTES,
        256,
        1 << 20,
        GucContext::Suset,
        TRUST_FLAGS | GucFlags::UNIT_BYTE,
    );
}

/// A string setting's value, with the empty string meaning "not set".
fn non_empty(setting: &GucSetting<Option<CString>>) -> Option<String> {
    let value = setting.get()?;
    // Lossy, never `None`: a value that is not UTF-8 must still fail to match, not mean "unset".
    let text = value.to_string_lossy().into_owned();
    (!text.is_empty()).then_some(text)
}

pub fn leeway() -> i64 {
    i64::from(LEEWAY.get())
}

pub fn issuer() -> Option<String> {
    non_empty(&ISSUER)
}

pub fn audience() -> Option<String> {
    non_empty(&AUDIENCE)
}

pub fn max_token_bytes() -> usize {
    usize::try_from(MAX_TOKEN_BYTES.get()).unwrap_or(0)
}
