//! Plans `auth.uid()` (and the other claim functions) as if written `(select auth.uid())`.
//!
//! A function called in a policy such as `owner = auth.uid()` is evaluated once per row; the
//! well-known workaround is to wrap it in a scalar sub-select, which the planner turns into an
//! initPlan evaluated once per statement. The claim functions' SUPPORT function does that
//! rewrite itself: asked to simplify a call (`SupportRequestSimplify`, during the planner's
//! expression preprocessing, just before sub-selects are planned), it returns the sub-select.
//! Nothing is folded into a constant, so cached and generic plans stay correct for every
//! identity.
//!
//! The call is left alone outside the planner (no `root`: defaults evaluated by COPY,
//! constraints) and in any query level that reads no table (only an RTE_RESULT, or nothing):
//! such a level evaluates its expressions once anyway, it includes the rewrite's own
//! sub-select, and — crucially — PL/pgSQL's "simple expressions" (`if auth.uid() is null`,
//! `x := auth.jwt() ->> 'sub'`) are such queries: PL/pgSQL decides they are simple before
//! planning and then evaluates them without the parameter storage an initPlan needs.

use pgrx::prelude::*;
use pgrx::{pg_sys, Internal, PgBox};

/// Planner support function of the claim functions.
#[pg_extern(immutable, parallel_safe)]
fn claim_function_support(request: Internal) -> Internal {
    let request = request.unwrap().unwrap_or(pg_sys::Datum::from(0usize));
    let rewritten = unsafe { rewrite_as_initplan(request.cast_mut_ptr()) };
    Internal::from(Some(pg_sys::Datum::from(rewritten)))
}

/// Whether `query` reads any table (or function, subquery, VALUES …): anything in its range
/// table besides the RTE_RESULT the planner gives a query without FROM.
unsafe fn reads_rows(query: *mut pg_sys::Query) -> bool {
    let rtable = (*query).rtable;
    let length = if rtable.is_null() {
        0
    } else {
        (*rtable).length
    };
    (0..length).any(|index| {
        let entry = pg_sys::list_nth(rtable, index) as *mut pg_sys::RangeTblEntry;
        (*entry).rtekind != pg_sys::RTEKind::RTE_RESULT
    })
}

unsafe fn rewrite_as_initplan(node: *mut pg_sys::Node) -> *mut pg_sys::Node {
    if node.is_null() || !pgrx::is_a(node, pg_sys::NodeTag::T_SupportRequestSimplify) {
        return std::ptr::null_mut();
    }
    let request = &*(node as *mut pg_sys::SupportRequestSimplify);
    let root = request.root;
    if root.is_null() || (*root).parse.is_null() || request.fcall.is_null() {
        return std::ptr::null_mut();
    }
    let call = request.fcall;
    if !(*call).args.is_null() || !reads_rows((*root).parse) {
        return std::ptr::null_mut();
    }
    // The call node handed to us is temporary: copy it into the sub-select.
    let call_copy = pg_sys::copyObjectImpl(call.cast()) as *mut pg_sys::Expr;
    let entry = pg_sys::makeTargetEntry(call_copy, 1, std::ptr::null_mut(), false);

    let mut select = PgBox::<pg_sys::Query>::alloc_node(pg_sys::NodeTag::T_Query);
    select.commandType = pg_sys::CmdType::CMD_SELECT;
    select.querySource = pg_sys::QuerySource::QSRC_ORIGINAL;
    select.canSetTag = true;
    select.jointree = pg_sys::makeFromExpr(std::ptr::null_mut(), std::ptr::null_mut());
    select.targetList = pg_sys::lappend(std::ptr::null_mut(), entry.cast());
    select.stmt_location = -1;

    let mut sublink = PgBox::<pg_sys::SubLink>::alloc_node(pg_sys::NodeTag::T_SubLink);
    sublink.subLinkType = pg_sys::SubLinkType::EXPR_SUBLINK;
    sublink.subselect = select.into_pg().cast();
    sublink.location = -1;

    // Sub-selects of this query level are planned right after this simplification, but only
    // when the query is known to have some.
    (*(*root).parse).hasSubLinks = true;
    sublink.into_pg().cast()
}
