//! Settings (GUCs) beyond what pgrx's `GucRegistry` offers: reading any setting by name,
//! setting one as `SET LOCAL` would with a chosen context, and string settings whose shown
//! value and accepted changes the extension decides (check and show hooks).

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::{pg_sys, PgSqlErrorCode};

/// Kept out of `postgresql.conf.sample` (the only flag pgrx's `GucFlags` lacks alone).
pub const NOT_IN_SAMPLE: GucFlags = GucFlags::from_bits_retain(pg_sys::GUC_NOT_IN_SAMPLE as i32);

/// A setting's current value as the server keeps it (a show hook is not consulted), or
/// `None` when no such setting exists. Copied: the server's string lives only until the
/// setting next changes.
pub fn value(name: &CStr) -> Option<Vec<u8>> {
    // SAFETY: a valid C string; `missing_ok` makes an unknown name NULL instead of an error,
    // and `restrict_privileged = false` reads without a privilege check (the extension reads
    // its own settings for any caller).
    let value = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    if value.is_null() {
        return None;
    }
    // SAFETY: a non-NULL result is the setting's NUL-terminated value, alive until the
    // setting changes; it is copied before anything else runs.
    Some(unsafe { CStr::from_ptr(value) }.to_bytes().to_vec())
}

/// Sets a setting until the end of the current transaction (or savepoint), as `SET LOCAL`
/// would, as if by a role with `context` (`Suset`: as a superuser). Errors (an unknown
/// setting, a value refused by its check hook, too little privilege) are raised.
pub fn set_local(name: &CStr, value: &CStr, context: GucContext) {
    // SAFETY: valid C strings, which the server copies; `elevel` ERROR makes every failure
    // an ereport, so the result needs no checking.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            context as pg_sys::GucContext::Type,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            pg_sys::PGERROR as i32,
            false,
        );
    }
}

/// Whether the postmaster is loading `shared_preload_libraries` (the only time a
/// server-start setting can be defined or shared memory requested).
pub fn loading_shared_preload_libraries() -> bool {
    // SAFETY: a process-global flag the server sets around loading the preloaded libraries.
    unsafe { pg_sys::process_shared_preload_libraries_in_progress }
}

/// Why a hooked string setting refuses a change: reported as the error of the `SET`.
pub struct Refusal {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
}

/// A string setting whose shown value and accepted changes the extension decides.
pub trait HookedString: 'static {
    /// The setting's own value, as the server keeps it.
    fn storage() -> &'static GucSetting<Option<CString>>;
    /// What the setting shows (`SHOW`, `current_setting`) instead of its own value, when
    /// anything.
    fn shown() -> Option<Vec<u8>>;
    /// Whether the setting may take the value `proposed` (a NULL value arrives as empty).
    fn check(proposed: &[u8]) -> Result<(), Refusal>;
}

/// Defines the string setting `name` with `H`'s hooks. Called once per setting, from
/// `_PG_init`.
pub fn define_hooked_string<H: HookedString>(
    name: &'static CStr,
    short_description: &'static CStr,
    long_description: &'static CStr,
    context: GucContext,
    flags: GucFlags,
) {
    // SAFETY: both hooks are `#[pg_guard]`, so a Rust panic or error inside them becomes a
    // PostgreSQL error instead of unwinding through the server's frames; the server calls
    // them only from this backend's thread.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            name,
            short_description,
            long_description,
            H::storage(),
            context,
            flags,
            Some(check_hook::<H>),
            None,
            Some(show_hook::<H>),
        );
    }
}

thread_local! {
    /// What a show hook last returned. The server copies a show hook's result at once
    /// (`ShowGUCOption`, `_ShowOption` before 16, returns a `pstrdup` of it), so one buffer
    /// serves every setting.
    static SHOWN: RefCell<CString> = RefCell::new(CString::default());
}

#[pgrx::pg_guard]
extern "C-unwind" fn show_hook<H: HookedString>() -> *const c_char {
    // A value with a NUL byte cannot be shown; it shows as empty.
    let shown = match H::shown() {
        Some(shown) => CString::new(shown).unwrap_or_default(),
        None => H::storage().get().unwrap_or_default(),
    };
    SHOWN.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        *buffer = shown;
        buffer.as_ptr()
    })
}

/// # Safety
/// Called by the server as a string setting's check hook: `newval` points at the proposed
/// value (a NUL-terminated string, or NULL).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_hook<H: HookedString>(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: the function's contract; the proposed string outlives this call.
    let proposed = unsafe {
        let value = *newval;
        if value.is_null() {
            &[][..]
        } else {
            CStr::from_ptr(value).to_bytes()
        }
    };
    let Err(refusal) = H::check(proposed) else {
        return true;
    };
    // Messages and details are ours; none holds a NUL byte.
    let message = CString::new(refusal.message).unwrap_or_default();
    let detail = refusal
        .detail
        .map(|detail| CString::new(detail).unwrap_or_default());
    // SAFETY: GUC_check_errcode and the message globals are how a check hook reports why it
    // refuses; the strings are copied into the server's memory (pstrdup) before the CStrings
    // are dropped.
    unsafe {
        pg_sys::GUC_check_errcode(refusal.code as i32);
        pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(message.as_ptr());
        if let Some(detail) = detail {
            pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
        }
    }
    false
}
