//! Binding a verified identity to a transaction, and the claim functions RLS policies call.
//!
//! The claim functions are STABLE and PARALLEL SAFE: they read settings only, which
//! PostgreSQL copies into parallel workers. They carry a planner support function (see
//! `planner_support.rs`) so that `owner = auth.uid()` is planned like
//! `owner = (select auth.uid())`: evaluated once per statement, not once per row. Their
//! `support` attribute names it by the end of its Rust path, which pgrx matches against
//! its functions' full paths (`pg_session_auth::api::planner_support::…`) to write
//! `SUPPORT "claim_function_support"` into their `CREATE FUNCTION` and to create the
//! support function first.

use pg_session_auth_core::identity;
use pgrx::prelude::*;
use pgrx::Uuid;

use crate::identity::{bind, claim_text, current_claims, request_rejection, whole_claims};
use crate::jsonb::JsonbObject;
use crate::verification::verify_or_raise;

/// `auth.authenticate(token)`: verifies the token with every rule of `auth.verify`, binds its
/// claims to the current transaction (and switches to the role it names, when allowed), and
/// returns the claims.
#[pg_extern(volatile, parallel_unsafe)]
fn authenticate(token: Option<&str>) -> JsonbObject {
    let (claims, key) = verify_or_raise(token);
    bind(&claims, &key);
    JsonbObject(claims)
}

/// `auth.jwt()`: all claims of the current identity, or NULL.
#[pg_extern(stable, parallel_safe, support = api::planner_support::claim_function_support)]
fn jwt() -> Option<JsonbObject> {
    whole_claims().map(|claims| JsonbObject((*claims).clone()))
}

/// `auth.uid()`: `sub` as a UUID; NULL when there is no identity or `sub` is no UUID.
#[pg_extern(stable, parallel_safe, support = api::planner_support::claim_function_support)]
fn uid() -> Option<Uuid> {
    claim_text("sub")
        .and_then(|sub| identity::parse_uuid(&sub))
        .map(Uuid::from_bytes)
}

/// `auth.user_id()`: `sub` as text, for identity providers whose subjects are not UUIDs.
#[pg_extern(stable, parallel_safe, support = api::planner_support::claim_function_support)]
fn user_id() -> Option<String> {
    claim_text("sub")
}

/// `auth.role()`: the role claim (`pg_session_auth.role_claim`, default `role`).
#[pg_extern(stable, parallel_safe, support = api::planner_support::claim_function_support)]
fn role() -> Option<String> {
    claim_text(&crate::gucs::role_claim())
}

/// `auth.email()`: the `email` claim.
#[pg_extern(stable, parallel_safe, support = api::planner_support::claim_function_support)]
fn email() -> Option<String> {
    claim_text("email")
}

/// `auth.session_id()`: the `session_id` claim (falling back to `sid`) as a UUID.
#[pg_extern(stable, parallel_safe, support = api::planner_support::claim_function_support)]
fn session_id() -> Option<Uuid> {
    current_claims()
        .and_then(|claims| identity::session_id(&claims))
        .map(Uuid::from_bytes)
}

/// Why the current request must be refused, or NULL; `auth.check_request()` (SQL, in
/// `sql/finalize.sql`) raises it with the SQLSTATE PostgREST turns into HTTP 401.
#[pg_extern(stable, parallel_restricted)]
fn request_rejection_reason() -> Option<String> {
    request_rejection().map(|rejection| rejection.reason())
}
