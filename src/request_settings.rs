//! The settings PostgREST and Supabase's SQL read a request's claims from, following the
//! bound identity.
//!
//! `request.jwt.claims` (and the older `request.jwt.claim` and `request.jwt.claim.sub`,
//! `.role`, `.email`, which Supabase's helper functions read first) are plain placeholders any
//! client may `SET`. Defined here, they follow the identity `auth.authenticate()` bound while
//! one is bound in `verified` mode: reads (`current_setting`, `SHOW`) show the bound claims,
//! and a check refuses every change a client asks for (`RESET` is the one change PostgreSQL
//! makes without asking; reads still show the bound claims). So SQL written for PostgREST
//! cannot be fooled by a client's `set_config()` after authentication. Before an identity is
//! bound they are as free as ever (PostgREST sets them at the start of each request), and in
//! `request` mode they are never touched.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};

use pgrx::pg_sys;

use crate::errors::Failure;
use crate::identity;

/// What a setting shows while an identity is bound.
#[derive(Clone, Copy)]
enum Shows {
    /// The claims as JSON.
    Claims,
    /// One claim as text (as `->>` gives it); empty when the claims lack it.
    Claim(&'static str),
}

const SETTINGS: [(&CStr, Shows); 5] = [
    (c"request.jwt.claims", Shows::Claims),
    (c"request.jwt.claim", Shows::Claims),
    (c"request.jwt.claim.sub", Shows::Claim("sub")),
    (c"request.jwt.claim.role", Shows::Claim("role")),
    (c"request.jwt.claim.email", Shows::Claim("email")),
];

/// The server's storage of each setting's own value.
static mut VALUES: [*mut c_char; SETTINGS.len()] = [std::ptr::null_mut(); SETTINGS.len()];

thread_local! {
    /// What the show hook of each setting last returned (alive until its next call; the
    /// server copies it at once).
    static SHOWN: RefCell<[CString; SETTINGS.len()]> = RefCell::new(Default::default());
}

/// Defines the settings. Called once, from `_PG_init`.
pub fn define() {
    define_setting::<0>();
    define_setting::<1>();
    define_setting::<2>();
    define_setting::<3>();
    define_setting::<4>();
}

fn define_setting<const N: usize>() {
    let (name, _) = SETTINGS[N];
    // SAFETY: called once per setting from _PG_init; the server keeps the value in VALUES[N]
    // and calls the hooks only from this backend's thread.
    unsafe {
        pg_sys::DefineCustomStringVariable(
            name.as_ptr(),
            c"The request's JWT claims, as PostgREST sets them; while auth.authenticate() has bound an identity (verified mode), the bound claims.".as_ptr(),
            c"While an identity is bound, only the bound claims may be set.".as_ptr(),
            &raw mut VALUES[N],
            c"".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GUC_NOT_IN_SAMPLE as i32,
            Some(check::<N>),
            None,
            Some(show::<N>),
        );
    }
}

/// What setting `N` shows while an identity is bound, or `None` when none is.
fn bound_value(n: usize) -> Option<Vec<u8>> {
    match SETTINGS[n].1 {
        Shows::Claims => identity::bound_claims_json(),
        Shows::Claim(name) => identity::bound_claim_text(name),
    }
}

unsafe extern "C-unwind" fn show<const N: usize>() -> *const c_char {
    if let Some(bound) = bound_value(N) {
        // Claims hold no NUL character (the token parser refuses it).
        let text = CString::new(bound).unwrap_or_default();
        return SHOWN.with(|shown| {
            let mut shown = shown.borrow_mut();
            shown[N] = text;
            shown[N].as_ptr()
        });
    }
    // SAFETY: the server's own value of the setting, a NUL-terminated string (or NULL).
    let value = unsafe { VALUES[N] };
    if value.is_null() {
        c"".as_ptr()
    } else {
        value
    }
}

unsafe extern "C-unwind" fn check<const N: usize>(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // Parallel workers restore whatever the leader had.
    if unsafe { pg_sys::ParallelWorkerNumber } >= 0 {
        return true;
    }
    let Some(bound) = bound_value(N) else {
        return true;
    };
    // SAFETY: the server passes a pointer to the proposed value (NULL for none).
    let proposed = unsafe {
        let value = *newval;
        if value.is_null() {
            &[][..]
        } else {
            CStr::from_ptr(value).to_bytes()
        }
    };
    if proposed == bound.as_slice() {
        return true;
    }
    let failure = Failure::BoundClaimSetting;
    let message = CString::new(failure.message()).expect("the message has no NUL byte");
    let detail = CString::new(failure.detail().unwrap_or_default()).expect("no NUL byte");
    // SAFETY: GUC_check_errcode and the message globals are how check hooks report why; the
    // strings are copied into the server's memory before the CStrings are dropped.
    unsafe {
        pg_sys::GUC_check_errcode(failure.error_code() as i32);
        pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(message.as_ptr());
        pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
    }
    false
}
