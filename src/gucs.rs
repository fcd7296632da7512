//! Every `pg_session_auth.*` setting. Each one that decides what is trusted is `SUSET`: only a
//! superuser (or a role granted `SET` on it) may change it, in a session, per role/database,
//! or in postgresql.conf (`revocation_filter_size`, a memory size, is set at server start). `SUPERUSER_ONLY`: the roles requests run as cannot even read them
//! (members of `pg_read_all_settings` can). `NO_RESET_ALL` keeps a client's `RESET ALL` /
//! `DISCARD ALL` from dropping a value a superuser set for the session.

use std::ffi::CString;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::PostgresGucEnum;

use crate::pg::settings;

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
pub static LEEWAY: GucSetting<i32> = GucSetting::<i32>::new(30);
/// When set, a token's `iss` must equal it.
pub static ISSUER: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// When set, a token's `aud` must contain it.
pub static AUDIENCE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Tokens longer than this many bytes are rejected before any parsing.
pub static MAX_TOKEN_BYTES: GucSetting<i32> = GucSetting::<i32>::new(8192);

/// Longest token lifetime accepted (`exp - iat`, seconds); 0 = no limit. Also how long
/// session and user revocations are kept before `auth.purge_revocations()` may delete them.
pub static MAX_TOKEN_LIFETIME: GucSetting<i32> = GucSetting::<i32>::new(0);

/// Memory of the shared revocation filter per database, in kB (0 = no filter). Takes effect
/// only with `shared_preload_libraries` and at server start (see `revocation_filter.rs`).
pub static REVOCATION_FILTER_SIZE: GucSetting<i32> = GucSetting::<i32>::new(2048);

/// Seconds an access token issued with a session lives (never past its session's end).
pub static ACCESS_TOKEN_LIFETIME: GucSetting<i32> = GucSetting::<i32>::new(3600);
/// Seconds a session lives from sign-in; 0 = no timebox.
pub static SESSION_TIMEBOX: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Seconds a session lives without a refresh; 0 = no inactivity timeout.
pub static SESSION_INACTIVITY_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Milliseconds during which a superseded refresh token still obtains the current one.
pub static REFRESH_REUSE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// Seconds the audit trail keeps an event before `auth.purge_audit_events()` deletes it.
pub static AUDIT_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(90 * 24 * 3600);
/// The cookie `auth.refresh_session_cookie()` reads and sets.
pub static REFRESH_COOKIE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"refresh_token"));
/// The `Path` of that cookie.
pub static REFRESH_COOKIE_PATH: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"/"));

/// Whether verifications, rejections, cache use, sessions and rule firings are counted, the
/// recent rejections kept, and the failure rules counted (`activity/`).
pub static TRACK_ACTIVITY: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Whether each rejection is written to the server log (reason, kid, sub; never the token).
pub static LOG_REJECTIONS: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Where the address of a sign-in or refresh comes from (`activity/client_ip.rs`).
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ClientIpSource {
    /// The `ip` argument of the call.
    #[name = c"argument"]
    Argument,
    /// The address of the connection (`inet_client_addr()`).
    #[name = c"connection"]
    Connection,
    /// A header of PostgREST's `request.headers`, set by a trusted proxy.
    #[name = c"header"]
    Header,
}

pub static CLIENT_IP_SOURCE: GucSetting<ClientIpSource> =
    GucSetting::<ClientIpSource>::new(ClientIpSource::Argument);
pub static CLIENT_IP_HEADER: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"x-forwarded-for"));

/// Where the claim functions take their claims from.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ClaimsSource {
    /// Only from `auth.authenticate()` in the current transaction.
    #[name = c"verified"]
    Verified,
    /// From `request.jwt.claims`, as set by PostgREST after it verified the token itself.
    #[name = c"request"]
    Request,
}

pub static CLAIMS_SOURCE: GucSetting<ClaimsSource> =
    GucSetting::<ClaimsSource>::new(ClaimsSource::Verified);
/// The claim naming the role a transaction runs as.
pub static ROLE_CLAIM: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"role"));
/// The roles a token may name, comma-separated.
pub static ALLOWED_ROLES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"anon,authenticated"));
/// The claims bound by `auth.authenticate()`: set only by the extension, transaction-locally.
pub static BOUND_CLAIMS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Whether this transaction wrote a revocation through the extension (see
/// `revocation::note_revocation_written`); set only by the extension, transaction-locally.
pub static REVOKED_IN_TRANSACTION: GucSetting<bool> = GucSetting::<bool>::new(false);
const REVOKED_IN_TRANSACTION_NAME: &std::ffi::CStr = c"pg_session_auth.revoked_in_transaction";

/// Name of [`BOUND_CLAIMS`].
pub const BOUND_CLAIMS_NAME: &std::ffi::CStr = c"pg_session_auth.claims";

const TRUST_FLAGS: GucFlags = GucFlags::NO_RESET_ALL.union(GucFlags::SUPERUSER_ONLY);

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
    GucRegistry::define_int_guc(
        c"pg_session_auth.max_token_lifetime",
        c"Longest accepted token lifetime (exp - iat); 0 means no limit. Revocations of sessions and users are kept this long.",
        c"",
        &MAX_TOKEN_LIFETIME,
        0,
        i32::MAX,
        GucContext::Suset,
        TRUST_FLAGS | GucFlags::UNIT_S,
    );
    GucRegistry::define_enum_guc(
        c"pg_session_auth.claims_source",
        c"Where the claim functions read claims: verified (auth.authenticate) or request (request.jwt.claims, set by PostgREST).",
        c"",
        &CLAIMS_SOURCE,
        GucContext::Suset,
        TRUST_FLAGS,
    );
    GucRegistry::define_string_guc(
        c"pg_session_auth.role_claim",
        c"The claim that names the role auth.authenticate() switches to.",
        c"",
        &ROLE_CLAIM,
        GucContext::Suset,
        TRUST_FLAGS,
    );
    GucRegistry::define_string_guc(
        c"pg_session_auth.allowed_roles",
        c"Comma-separated roles a token's role claim may name.",
        c"",
        &ALLOWED_ROLES,
        GucContext::Suset,
        TRUST_FLAGS,
    );
    register_session_settings();
    register_activity_settings();
    // A server-start setting can only be defined while the postmaster loads the library.
    if settings::loading_shared_preload_libraries() {
        define_revocation_filter_size();
    }
    // Written only by auth.authenticate() (as SET LOCAL would, with superuser context), so no
    // client can set it; hidden from SHOW ALL and from roles that cannot read all settings.
    // Not reset by RESET ALL: the identity (and request.jwt.claims, which shows it) stays
    // until the transaction ends, instead of giving way to whatever the session had.
    GucRegistry::define_string_guc(
        BOUND_CLAIMS_NAME,
        c"Claims bound to the current transaction by auth.authenticate() (internal).",
        c"",
        &BOUND_CLAIMS,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL
            | GucFlags::SUPERUSER_ONLY
            | GucFlags::DISALLOW_IN_FILE
            | GucFlags::NO_RESET_ALL,
    );
    GucRegistry::define_bool_guc(
        REVOKED_IN_TRANSACTION_NAME,
        c"Whether the current transaction revoked through pg_session_auth (internal).",
        c"",
        &REVOKED_IN_TRANSACTION,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL
            | GucFlags::SUPERUSER_ONLY
            | GucFlags::DISALLOW_IN_FILE
            | GucFlags::NO_RESET_ALL,
    );
    crate::request_settings::define();
}

/// Marks the current transaction (as `SET LOCAL` would, with superuser context) as one that
/// revoked through the extension.
pub fn note_revoked_in_transaction() {
    settings::set_local(REVOKED_IN_TRANSACTION_NAME, c"on", GucContext::Suset);
}

pub fn revoked_in_transaction() -> bool {
    REVOKED_IN_TRANSACTION.get()
}

fn register_session_settings() {
    let seconds = |name, description, setting, default_max| {
        GucRegistry::define_int_guc(
            name,
            description,
            c"",
            setting,
            0,
            default_max,
            GucContext::Suset,
            TRUST_FLAGS | GucFlags::UNIT_S,
        );
    };
    seconds(
        c"pg_session_auth.access_token_lifetime",
        c"Lifetime of the access tokens issued with a session (never past the session's end).",
        &ACCESS_TOKEN_LIFETIME,
        i32::MAX,
    );
    seconds(
        c"pg_session_auth.session_timebox",
        c"How long a session lives from sign-in; 0 means no limit.",
        &SESSION_TIMEBOX,
        i32::MAX,
    );
    seconds(
        c"pg_session_auth.session_inactivity_timeout",
        c"How long a session lives without a refresh; 0 means no limit.",
        &SESSION_INACTIVITY_TIMEOUT,
        i32::MAX,
    );
    GucRegistry::define_int_guc(
        c"pg_session_auth.refresh_reuse_interval",
        c"How long a superseded refresh token still obtains the session's current one.",
        c"",
        &REFRESH_REUSE_INTERVAL,
        0,
        3_600_000,
        GucContext::Suset,
        TRUST_FLAGS | GucFlags::UNIT_MS,
    );
    seconds(
        c"pg_session_auth.audit_retention",
        c"How long auth.audit_events keeps an event before auth.purge_audit_events() deletes it.",
        &AUDIT_RETENTION,
        i32::MAX,
    );
    GucRegistry::define_string_guc(
        c"pg_session_auth.refresh_cookie",
        c"Name of the cookie auth.refresh_session_cookie() reads and sets.",
        c"",
        &REFRESH_COOKIE,
        GucContext::Suset,
        TRUST_FLAGS,
    );
    GucRegistry::define_string_guc(
        c"pg_session_auth.refresh_cookie_path",
        c"Path attribute of the refresh token cookie.",
        c"",
        &REFRESH_COOKIE_PATH,
        GucContext::Suset,
        TRUST_FLAGS,
    );
}

fn register_activity_settings() {
    GucRegistry::define_bool_guc(
        c"pg_session_auth.track_activity",
        c"Counts verifications, rejections, sessions and rule firings (auth.stats()), keeps the recent rejections and counts the failure rules.",
        c"",
        &TRACK_ACTIVITY,
        GucContext::Suset,
        TRUST_FLAGS,
    );
    GucRegistry::define_bool_guc(
        c"pg_session_auth.log_rejections",
        c"Writes each rejected token or refresh to the server log: reason, kid and subject, never the token.",
        c"",
        &LOG_REJECTIONS,
        GucContext::Suset,
        TRUST_FLAGS,
    );
    GucRegistry::define_enum_guc(
        c"pg_session_auth.client_ip_source",
        c"Where the address of a sign-in or refresh comes from: the ip argument, the connection, or a request header set by a trusted proxy.",
        c"",
        &CLIENT_IP_SOURCE,
        GucContext::Suset,
        TRUST_FLAGS,
    );
    GucRegistry::define_string_guc(
        c"pg_session_auth.client_ip_header",
        c"The request header (PostgREST's request.headers) that holds the client's address when client_ip_source is header; of a list, the last entry.",
        c"",
        &CLIENT_IP_HEADER,
        GucContext::Suset,
        TRUST_FLAGS,
    );
}

pub fn track_activity() -> bool {
    TRACK_ACTIVITY.get()
}

pub fn log_rejections() -> bool {
    LOG_REJECTIONS.get()
}

pub fn client_ip_source() -> ClientIpSource {
    CLIENT_IP_SOURCE.get()
}

pub fn client_ip_header() -> String {
    non_empty(&CLIENT_IP_HEADER).unwrap_or_else(|| "x-forwarded-for".to_owned())
}

/// Session lifetimes, in microseconds (`None`: no limit).
pub struct SessionLimits {
    pub access_token_lifetime: i64,
    pub timebox: Option<i64>,
    pub inactivity_timeout: Option<i64>,
    pub reuse_interval: i64,
}

pub fn session_limits() -> SessionLimits {
    let micros = |seconds: i32| i64::from(seconds) * 1_000_000;
    let optional = |seconds: i32| (seconds > 0).then(|| micros(seconds));
    SessionLimits {
        access_token_lifetime: micros(ACCESS_TOKEN_LIFETIME.get()),
        timebox: optional(SESSION_TIMEBOX.get()),
        inactivity_timeout: optional(SESSION_INACTIVITY_TIMEOUT.get()),
        reuse_interval: i64::from(REFRESH_REUSE_INTERVAL.get()) * 1_000,
    }
}

pub fn audit_retention_seconds() -> f64 {
    f64::from(AUDIT_RETENTION.get())
}

pub fn refresh_cookie() -> String {
    non_empty(&REFRESH_COOKIE).unwrap_or_else(|| "refresh_token".to_owned())
}

pub fn refresh_cookie_path() -> String {
    non_empty(&REFRESH_COOKIE_PATH).unwrap_or_else(|| "/".to_owned())
}

fn define_revocation_filter_size() {
    GucRegistry::define_int_guc(
        c"pg_session_auth.revocation_filter_size",
        c"Shared memory per database for the revocation filter (needs shared_preload_libraries); 0 turns it off.",
        c"",
        &REVOCATION_FILTER_SIZE,
        0,
        1 << 20,
        GucContext::Postmaster,
        GucFlags::UNIT_KB | GucFlags::SUPERUSER_ONLY,
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

/// The lifetime limit in seconds, when one is set.
pub fn max_token_lifetime() -> Option<i64> {
    let seconds = MAX_TOKEN_LIFETIME.get();
    (seconds > 0).then_some(i64::from(seconds))
}

pub fn claims_source() -> ClaimsSource {
    CLAIMS_SOURCE.get()
}

pub fn role_claim() -> String {
    non_empty(&ROLE_CLAIM).unwrap_or_else(|| "role".to_owned())
}

pub fn allowed_roles() -> String {
    non_empty(&ALLOWED_ROLES).unwrap_or_default()
}

pub fn max_token_bytes() -> usize {
    usize::try_from(MAX_TOKEN_BYTES.get()).unwrap_or(0)
}
