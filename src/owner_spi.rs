//! Queries on the extension's own tables on behalf of any caller.
//!
//! Verification runs as whatever role calls it, but the tables it reads are closed to those
//! roles. So each query runs as the table's owner (what a SECURITY DEFINER function does), in
//! a security-restricted operation, with `search_path` pinned to `pg_catalog, pg_temp` (the
//! caller's path could otherwise put its own functions or operators into our query, to be
//! run as the owner). Every read takes a snapshot of its own, newer than every invalidation
//! this backend has processed — also in parallel mode, inside a REPEATABLE READ transaction
//! or under a cursor opened earlier — so an answer read here may be cached for as long as
//! no invalidation arrives (see `invalidation.rs`) and a statement never sees a revocation or
//! key change committed before its check as absent.
//! Statements are prepared once per backend and kept.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use pgrx::spi::Spi;
use pgrx::IntoDatum;

use crate::errors::{raise, Failure};

/// One row, every column in its text form (`None` for NULL).
pub type TextRow = Vec<Option<String>>;

/// A query argument: its type and value (`None` for NULL).
pub type Arg = (pg_sys::Oid, Option<pg_sys::Datum>);

pub fn text_arg(value: &str) -> Arg {
    (pg_sys::TEXTOID, value.into_datum())
}

pub fn uuid_arg(value: Option<[u8; 16]>) -> Arg {
    (
        pg_sys::UUIDOID,
        value.and_then(|bytes| pgrx::Uuid::from_bytes(bytes).into_datum()),
    )
}

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, usize>> = RefCell::new(HashMap::new());
}

/// The OID and owner of a relation in schema `auth`, or `None` when it does not exist (the
/// library may be loaded in a database without the extension).
pub fn relation_and_owner(name: &str) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    let rows = select(
        None,
        "select c.oid::pg_catalog.int8, c.relowner::pg_catalog.int8 from pg_catalog.pg_class c \
         join pg_catalog.pg_namespace n on n.oid operator(pg_catalog.=) c.relnamespace \
         where n.nspname operator(pg_catalog.=) 'auth' and c.relname operator(pg_catalog.=) $1",
        &[text_arg(name)],
    );
    let row = rows.first()?;
    let oid = |i: usize| {
        row[i]
            .as_deref()?
            .parse::<u32>()
            .ok()
            .map(pg_sys::Oid::from)
    };
    Some((oid(0)?, oid(1)?))
}

/// Whether the relation has a column of that name (for tables an update adds columns to).
pub fn has_column(relid: pg_sys::Oid, column: &str) -> bool {
    let Ok(column) = CString::new(column) else {
        return false;
    };
    // SAFETY: a syscache lookup by OID and name; InvalidAttrNumber when there is none.
    unsafe { pg_sys::get_attnum(relid, column.as_ptr()) > 0 }
}

/// Runs a read-only query as `run_as` (or the current user) under a fresh snapshot.
pub fn select(run_as: Option<pg_sys::Oid>, query: &'static str, args: &[Arg]) -> Vec<TextRow> {
    run(run_as, query, args, Mode::Read).1
}

/// Runs a data-modifying statement as `run_as`; returns the rows processed and any
/// `RETURNING` rows. Triggers fire (so caches everywhere learn of the change).
pub fn modify(run_as: pg_sys::Oid, query: &'static str, args: &[Arg]) -> (u64, Vec<TextRow>) {
    run(Some(run_as), query, args, Mode::Write)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Read,
    Write,
}

/// A snapshot taken now: it sees every transaction committed before this call (and this
/// transaction's own earlier commands), whatever the transaction's isolation level.
///
/// `GetLatestSnapshot()` refuses to run in parallel mode (the leader running a parallel plan,
/// and its workers), where the statement's own snapshot may be arbitrarily old under
/// REPEATABLE READ. `GetCatalogSnapshot()` for a relation without a catalog cache (any OID
/// that is not a cached system catalog, here `InvalidOid`) always takes a new MVCC snapshot
/// (`GetSnapshotData`) and may be called anywhere, parallel workers included. The snapshot is
/// used at once: `SPI_execute_snapshot` and `PushActiveSnapshot` copy it.
pub fn fresh_snapshot() -> pg_sys::Snapshot {
    unsafe { pg_sys::GetCatalogSnapshot(pg_sys::InvalidOid) }
}

unsafe fn prepared_plan(query: &'static str, args: &[Arg]) -> pg_sys::SPIPlanPtr {
    if let Some(plan) = PLANS.with(|plans| plans.borrow().get(query).copied()) {
        return plan as pg_sys::SPIPlanPtr;
    }
    let text = CString::new(query).expect("queries are written without NUL bytes");
    let mut types: Vec<pg_sys::Oid> = args.iter().map(|(oid, _)| *oid).collect();
    let plan = pg_sys::SPI_prepare(text.as_ptr(), types.len() as i32, types.as_mut_ptr());
    if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
        raise(Failure::ObjectsAltered {
            what: "an internal query could not be prepared".into(),
        });
    }
    PLANS.with(|plans| plans.borrow_mut().insert(query, plan as usize));
    plan
}

fn run(
    run_as: Option<pg_sys::Oid>,
    query: &'static str,
    args: &[Arg],
    mode: Mode,
) -> (u64, Vec<TextRow>) {
    in_owner_context(run_as, || unsafe {
        let plan = prepared_plan(query, args);
        let mut values: Vec<pg_sys::Datum> = args
            .iter()
            .map(|(_, value)| value.unwrap_or(pg_sys::Datum::from(0)))
            .collect();
        let nulls: Vec<std::ffi::c_char> = args
            .iter()
            .map(|(_, value)| if value.is_some() { b' ' } else { b'n' } as std::ffi::c_char)
            .collect();
        let status = match mode {
            Mode::Read => pg_sys::SPI_execute_snapshot(
                plan,
                values.as_mut_ptr(),
                nulls.as_ptr(),
                fresh_snapshot(),
                std::ptr::null_mut(),
                true,
                false,
                0,
            ),
            Mode::Write => {
                pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), false, 0)
            }
        };
        if status < 0 {
            raise(Failure::ObjectsAltered {
                what: format!("an internal query failed (SPI status {status})"),
            });
        }
        (pg_sys::SPI_processed, collect_rows())
    })
}

/// Runs `body` inside an SPI connection as `run_as` (or the current user), with
/// `search_path` pinned to `pg_catalog, pg_temp`.
fn in_owner_context<R>(run_as: Option<pg_sys::Oid>, body: impl FnOnce() -> R) -> R {
    Spi::connect(|_client| unsafe {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        if let Some(owner) = run_as {
            pg_sys::SetUserIdAndSecContext(
                owner,
                saved_context
                    | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                    | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
        }
        // As a SECURITY DEFINER function's `SET search_path` does: a new GUC nest level,
        // popped below. On ERROR, (sub)transaction abort restores the user id and settings.
        // Also while executing: a kept plan is re-planned whenever the current search_path
        // differs from the one it was prepared under.
        let guc_level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            pg_sys::PGERROR as i32,
            false,
        );
        let result = body();
        pg_sys::AtEOXact_GUC(true, guc_level);
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        result
    })
}

unsafe fn collect_rows() -> Vec<TextRow> {
    let table = pg_sys::SPI_tuptable;
    if table.is_null() {
        return Vec::new();
    }
    let tupdesc = (*table).tupdesc;
    let columns = (*tupdesc).natts;
    (0..pg_sys::SPI_processed as usize)
        .map(|row| {
            let tuple = *(*table).vals.add(row);
            (1..=columns)
                .map(|column| {
                    let value = pg_sys::SPI_getvalue(tuple, tupdesc, column);
                    (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
                })
                .collect()
        })
        .collect()
}
