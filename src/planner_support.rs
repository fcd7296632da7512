//! Plans `auth.uid()` (and the other claim functions) as if written `(select auth.uid())`.
//!
//! A function called in a policy such as `owner = auth.uid()` is evaluated once per row; the
//! well-known workaround is to wrap it in a scalar sub-select, which the planner turns into an
//! initPlan evaluated once per statement. The claim functions' SUPPORT function does that
//! rewrite itself: asked to simplify a call (`SupportRequestSimplify`, during the planner's
//! expression preprocessing, just before sub-selects are planned), it returns the sub-select.
//! Nothing is folded into a constant, so cached and generic plans stay correct for every
//! identity. Outside the planner (no `root`: defaults evaluated by COPY, constraints) and
//! inside the sub-select itself the call is left alone.

use pgrx::prelude::*;
use pgrx::{pg_sys, Internal, PgBox};

/// Planner support function of the claim functions.
#[pg_extern(immutable, parallel_safe)]
fn claim_function_support(request: Internal) -> Internal {
    let request = request.unwrap().unwrap_or(pg_sys::Datum::from(0usize));
    let rewritten = unsafe { rewrite_as_initplan(request.cast_mut_ptr()) };
    Internal::from(Some(pg_sys::Datum::from(rewritten)))
}

/// Whether `query` is exactly `SELECT <call of funcid>`, with no FROM items (the planner
/// gives such a query one RTE_RESULT) and no WHERE: our own sub-select, or the user's.
unsafe fn is_single_call_select(query: *mut pg_sys::Query, funcid: pg_sys::Oid) -> bool {
    let query = &*query;
    if query.targetList.is_null() || (*query.targetList).length != 1 {
        return false;
    }
    if !query.jointree.is_null() && !(*query.jointree).quals.is_null() {
        return false;
    }
    let rtable_len = if query.rtable.is_null() {
        0
    } else {
        (*query.rtable).length
    };
    for index in 0..rtable_len {
        let rte = pg_sys::list_nth(query.rtable, index) as *mut pg_sys::RangeTblEntry;
        if (*rte).rtekind != pg_sys::RTEKind::RTE_RESULT {
            return false;
        }
    }
    let entry = pg_sys::list_nth(query.targetList, 0) as *mut pg_sys::TargetEntry;
    let expr = (*entry).expr as *mut pg_sys::Node;
    pgrx::is_a(expr, pg_sys::NodeTag::T_FuncExpr)
        && (*(expr as *mut pg_sys::FuncExpr)).funcid == funcid
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
    if !(*call).args.is_null() || is_single_call_select((*root).parse, (*call).funcid) {
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
