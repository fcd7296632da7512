//! The planner's nodes, as the claim functions' support function reads and rewrites them.
//!
//! A support function receives its request as an `internal` pointer to a node; every read
//! and every node built here goes through raw pointers. The rest of the crate sees the safe
//! types below and decides, in plain Rust, when to rewrite (`planner_support.rs`).

use std::marker::PhantomData;
use std::ptr;

use pgrx::{pg_sys, Internal, PgBox};

/// What the planner asks a support function.
pub enum SupportRequest<'a> {
    /// Simplify a call (`SupportRequestSimplify`), during the planner's expression
    /// preprocessing: the answer is an equivalent expression, or none.
    Simplify(SimplifyCall<'a>),
    /// Anything else (selectivity, cost, rows, index conditions …).
    Other,
}

impl<'a> SupportRequest<'a> {
    /// The request behind a support function's argument.
    ///
    /// # Safety
    /// `request` is the `internal` argument PostgreSQL passes a support function: NULL or a
    /// pointer to a support request node, valid and used by nothing else until the support
    /// function returns, which the result (lifetime `'a`) must not outlive.
    pub unsafe fn from_internal(request: Internal) -> SupportRequest<'a> {
        let node = request.unwrap().map_or(ptr::null_mut(), |datum| {
            datum.cast_mut_ptr::<pg_sys::Node>()
        });
        // SAFETY: `node` is NULL (checked first) or a valid node (the caller's contract),
        // whose tag is read.
        if node.is_null() || !unsafe { pgrx::is_a(node, pg_sys::NodeTag::T_SupportRequestSimplify) }
        {
            return SupportRequest::Other;
        }
        let request = node.cast::<pg_sys::SupportRequestSimplify>();
        // SAFETY: a node tagged T_SupportRequestSimplify is a SupportRequestSimplify.
        let (root, call) = unsafe { ((*request).root, (*request).fcall) };
        if call.is_null() {
            return SupportRequest::Other;
        }
        SupportRequest::Simplify(SimplifyCall {
            root,
            call,
            _request: PhantomData,
        })
    }
}

/// A function call the planner asks to simplify.
pub struct SimplifyCall<'a> {
    /// The planner's state; NULL outside the planner.
    root: *mut pg_sys::PlannerInfo,
    /// The call (never NULL).
    call: *mut pg_sys::FuncExpr,
    _request: PhantomData<&'a mut pg_sys::SupportRequestSimplify>,
}

impl<'a> SimplifyCall<'a> {
    /// Whether the call passes any argument.
    pub fn has_arguments(&self) -> bool {
        // SAFETY: `call` is the request's FuncExpr, checked non-NULL when the request was
        // read and valid while it lives.
        unsafe { !(*self.call).args.is_null() }
    }

    /// The query level the call is planned in; `None` when it is not being planned by the
    /// planner (a default evaluated by COPY, a constraint: no planner state).
    pub fn query_level(&self) -> Option<QueryLevel<'a>> {
        if self.root.is_null() {
            return None;
        }
        // SAFETY: a non-NULL `root` is the planner's state for the level being planned,
        // valid while the request lives.
        let query = unsafe { (*self.root).parse };
        (!query.is_null()).then_some(QueryLevel {
            query,
            _planning: PhantomData,
        })
    }

    /// The call as a scalar sub-select of a copy of itself, `(select call)`, to replace it in
    /// `level` (which must be [`Self::query_level`]); the planner turns the sub-select into an
    /// initPlan. The nodes live in the current (the planner's) memory context.
    pub fn into_scalar_subselect(self, level: QueryLevel<'a>) -> Replacement {
        // SAFETY: `call` is valid while the request lives (see `has_arguments`); the call node
        // handed over is temporary, so the sub-select gets a deep copy. Every other call
        // builds a new node in the current memory context from valid (or NULL) inputs, and
        // alloc_node gives zeroed nodes of the right size and tag, filled in below.
        let (mut select, mut sublink, jointree, target_list) = unsafe {
            let call_copy = pg_sys::copyObjectImpl(self.call.cast()).cast::<pg_sys::Expr>();
            let entry = pg_sys::makeTargetEntry(call_copy, 1, ptr::null_mut(), false);
            (
                PgBox::<pg_sys::Query>::alloc_node(pg_sys::NodeTag::T_Query),
                PgBox::<pg_sys::SubLink>::alloc_node(pg_sys::NodeTag::T_SubLink),
                pg_sys::makeFromExpr(ptr::null_mut(), ptr::null_mut()),
                pg_sys::lappend(ptr::null_mut(), entry.cast()),
            )
        };
        select.commandType = pg_sys::CmdType::CMD_SELECT;
        select.querySource = pg_sys::QuerySource::QSRC_ORIGINAL;
        select.canSetTag = true;
        select.jointree = jointree;
        select.targetList = target_list;
        select.stmt_location = -1;

        sublink.subLinkType = pg_sys::SubLinkType::EXPR_SUBLINK;
        sublink.subselect = select.into_pg().cast();
        sublink.location = -1;

        // Sub-selects of a query level are planned right after this simplification, but only
        // when the level is known to have some.
        // SAFETY: `level.query` is the planner's Query of this level, valid while the request
        // lives (see `query_level`).
        unsafe { (*level.query).hasSubLinks = true };
        Replacement(sublink.into_pg().cast())
    }
}

/// The query level a call is planned in.
pub struct QueryLevel<'a> {
    query: *mut pg_sys::Query,
    _planning: PhantomData<&'a mut pg_sys::Query>,
}

impl QueryLevel<'_> {
    /// Whether the level reads any table (or function, subquery, VALUES …): anything in its
    /// range table besides the RTE_RESULT the planner gives a query without FROM.
    pub fn reads_rows(&self) -> bool {
        // SAFETY: `query` is the planner's Query of this level (see `query_level`); its range
        // table is NIL (NULL) or a List of RangeTblEntry nodes, read by index within its
        // length.
        unsafe {
            let rtable = (*self.query).rtable;
            let length = if rtable.is_null() {
                0
            } else {
                (*rtable).length
            };
            (0..length).any(|index| {
                let entry = pg_sys::list_nth(rtable, index).cast::<pg_sys::RangeTblEntry>();
                (*entry).rtekind != pg_sys::RTEKind::RTE_RESULT
            })
        }
    }
}

/// An expression built to replace a call.
pub struct Replacement(*mut pg_sys::Node);

/// A support function's result: the replacement, or a NULL pointer for "no simplification".
pub fn support_result(replacement: Option<Replacement>) -> Internal {
    let node = replacement.map_or(ptr::null_mut(), |Replacement(node)| node);
    Internal::from(Some(pg_sys::Datum::from(node)))
}
