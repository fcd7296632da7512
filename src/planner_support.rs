//! Plans `auth.uid()` (and the other claim functions) as if written `(select auth.uid())`.
//!
//! A function called in a policy such as `owner = auth.uid()` is evaluated once per row; the
//! well-known workaround is to wrap it in a scalar sub-select, which the planner turns into an
//! initPlan evaluated once per statement. The claim functions' SUPPORT function
//! (`api/planner_support.rs`) does that rewrite itself: asked to simplify a call
//! (`SupportRequestSimplify`, during the planner's expression preprocessing, just before
//! sub-selects are planned), it returns the sub-select. Nothing is folded into a constant, so
//! cached and generic plans stay correct for every identity.
//!
//! The call is left alone outside the planner (no planner state: defaults evaluated by COPY,
//! constraints) and in any query level that reads no table (only an RTE_RESULT, or nothing):
//! such a level evaluates its expressions once anyway, it includes the rewrite's own
//! sub-select, and — crucially — PL/pgSQL's "simple expressions" (`if auth.uid() is null`,
//! `x := auth.jwt() ->> 'sub'`) are such queries: PL/pgSQL decides they are simple before
//! planning and then evaluates them without the parameter storage an initPlan needs.
//!
//! This module decides; the nodes are read and built in `pg/planner.rs`.

use crate::pg::planner::{Replacement, SupportRequest};

/// What replaces a claim function's call, if anything: its scalar sub-select, for an
/// argument-less call planned in a query level that reads rows.
pub fn replacement(request: SupportRequest<'_>) -> Option<Replacement> {
    let SupportRequest::Simplify(call) = request else {
        return None;
    };
    let level = call.query_level()?;
    if call.has_arguments() || !level.reads_rows() {
        return None;
    }
    Some(call.into_scalar_subselect(level))
}
