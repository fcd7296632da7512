//! The claim functions' planner support function (see `planner_support.rs` for what it does
//! and when). The claim functions name it in their `support` attribute
//! (`api/identity.rs`); only the extension's owner and superusers may call it
//! (`sql/finalize.sql`).

use pgrx::prelude::*;
use pgrx::Internal;

use crate::pg::planner::{support_result, SupportRequest};

/// Planner support function of the claim functions.
#[pg_extern(immutable, parallel_safe)]
fn claim_function_support(request: Internal) -> Internal {
    // SAFETY: PostgreSQL calls a support function with the request node it asks about, valid
    // for this call; SQL cannot pass an `internal` value of its own, and EXECUTE is revoked
    // from PUBLIC. The request is used only within this call.
    let request = unsafe { SupportRequest::from_internal(request) };
    support_result(crate::planner_support::replacement(request))
}
