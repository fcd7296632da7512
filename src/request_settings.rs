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

use std::ffi::{CStr, CString};

use pgrx::guc::{GucContext, GucSetting};

use crate::errors::Failure;
use crate::identity;
use crate::pg::settings::{self, HookedString, Refusal};
use crate::pg::transaction;

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

/// Each setting's own value, as the server keeps it (what clients set).
static VALUES: [GucSetting<Option<CString>>; SETTINGS.len()] =
    [const { GucSetting::<Option<CString>>::new(Some(c"")) }; SETTINGS.len()];

/// Defines the settings. Called once, from `_PG_init`.
pub fn define() {
    define_setting::<0>();
    define_setting::<1>();
    define_setting::<2>();
    define_setting::<3>();
    define_setting::<4>();
}

fn define_setting<const N: usize>() {
    settings::define_hooked_string::<RequestSetting<N>>(
        SETTINGS[N].0,
        c"The request's JWT claims, as PostgREST sets them; while auth.authenticate() has bound an identity (verified mode), the bound claims.",
        c"While an identity is bound, only the bound claims may be set.",
        GucContext::Userset,
        settings::NOT_IN_SAMPLE,
    );
}

/// What setting `N` shows while an identity is bound, or `None` when none is.
fn bound_value(n: usize) -> Option<Vec<u8>> {
    match SETTINGS[n].1 {
        Shows::Claims => identity::bound_claims_json(),
        Shows::Claim(name) => identity::bound_claim_text(name),
    }
}

/// Setting `N` of [`SETTINGS`].
struct RequestSetting<const N: usize>;

impl<const N: usize> HookedString for RequestSetting<N> {
    fn storage() -> &'static GucSetting<Option<CString>> {
        &VALUES[N]
    }

    fn shown() -> Option<Vec<u8>> {
        bound_value(N)
    }

    fn check(proposed: &[u8]) -> Result<(), Refusal> {
        // Parallel workers restore whatever the leader had.
        if transaction::in_parallel_worker() {
            return Ok(());
        }
        match bound_value(N) {
            Some(bound) if proposed != bound.as_slice() => {
                let failure = Failure::BoundClaimSetting;
                Err(Refusal {
                    code: failure.error_code(),
                    message: failure.message(),
                    detail: failure.detail(),
                })
            }
            _ => Ok(()),
        }
    }
}
