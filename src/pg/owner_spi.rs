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
//! Statements are prepared once per backend and kept. Their text lives in `src/queries/`
//! (loaded with `include_str!`); rows come back decoded into Rust values by the caller's
//! `decode` closure ([`Row::get`]), never as text to be parsed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::spi::Spi;
use pgrx::{FromDatum, IntoDatum};

use crate::errors::{raise, Failure};

/// One row of a result, read while the query's SPI connection is open.
pub struct Row {
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
}

impl Row {
    /// Column `column` (counted from 0) as a `T` (`None` for NULL). A column of a type `T`
    /// cannot hold means the query or table was altered: `55000`, never a guess.
    pub fn get<T: FromDatum + IntoDatum>(&self, column: usize) -> Option<T> {
        let number = i32::try_from(column + 1).expect("a query has few columns");
        let mut is_null = false;
        // SAFETY: `tuple` and `tupdesc` come from SPI_tuptable of the query just run, whose
        // SPI connection is still open (rows are decoded inside `run`); SPI_getbinval and
        // SPI_gettypeid check the column number. The datum is converted (copied into Rust
        // memory for the owned types used here) before the connection closes.
        let decoded = unsafe {
            let datum = pg_sys::SPI_getbinval(self.tuple, self.tupdesc, number, &mut is_null);
            let type_oid = pg_sys::SPI_gettypeid(self.tupdesc, number);
            T::try_from_datum(datum, is_null, type_oid)
        };
        decoded.unwrap_or_else(|error| {
            raise(Failure::ObjectsAltered {
                what: format!("an internal query returned an unexpected column: {error}"),
            })
        })
    }
}

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
/// library may be loaded in a database without the extension). Read from the catalog caches,
/// which follow every committed change from the next command on: no query.
///
/// Only a schema and a relation owned by superusers count: the extension's are (the install
/// refuses a schema `auth` of anyone else), and a role that owned its own `auth` could
/// otherwise put tables of its choosing where the extension looks for its own.
pub fn relation_and_owner(name: &str) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    let name = CString::new(name).ok()?;
    // SAFETY: syscache lookups by name (missing_ok: InvalidOid when absent) and by OID; the
    // tuples found are read (their fixed-size parts, through GETSTRUCT) and released before
    // anything else runs.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"auth".as_ptr(), true);
        if namespace == pg_sys::InvalidOid {
            return None;
        }
        let schema_owner = owner_in_syscache(
            pg_sys::SysCacheIdentifier::NAMESPACEOID,
            namespace,
            |tuple| {
                (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_namespace>(tuple)).nspowner
            },
        )?;
        let relid = pg_sys::get_relname_relid(name.as_ptr(), namespace);
        if relid == pg_sys::InvalidOid {
            return None;
        }
        let owner = owner_in_syscache(pg_sys::SysCacheIdentifier::RELOID, relid, |tuple| {
            (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple)).relowner
        })?;
        (pg_sys::superuser_arg(schema_owner) && pg_sys::superuser_arg(owner))
            .then_some((relid, owner))
    }
}

/// The owner `read` finds in the syscache `cache` entry of `oid`.
///
/// # Safety
/// `read` must read the tuple of that cache's catalog only.
unsafe fn owner_in_syscache(
    cache: pg_sys::SysCacheIdentifier::Type,
    oid: pg_sys::Oid,
    read: impl FnOnce(pg_sys::HeapTuple) -> pg_sys::Oid,
) -> Option<pg_sys::Oid> {
    // SAFETY: a syscache lookup by OID; the tuple is released after `read` (the caller's
    // contract) has copied the owner out of it.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(cache as i32, pg_sys::Datum::from(oid));
        if tuple.is_null() {
            return None;
        }
        let owner = read(tuple);
        pg_sys::ReleaseSysCache(tuple);
        Some(owner)
    }
}

/// Whether the relation has a column of that name (for tables an update adds columns to).
pub fn has_column(relid: pg_sys::Oid, column: &str) -> bool {
    let Ok(column) = CString::new(column) else {
        return false;
    };
    // SAFETY: a syscache lookup by OID and name; InvalidAttrNumber when there is none.
    unsafe { pg_sys::get_attnum(relid, column.as_ptr()) > 0 }
}

/// Runs a read-only query as `run_as` (or the current user) under a fresh snapshot; each
/// row is decoded by `decode`.
pub fn select<T>(
    run_as: Option<pg_sys::Oid>,
    query: &'static str,
    args: &[Arg],
    decode: impl FnMut(&Row) -> T,
) -> Vec<T> {
    run(run_as, query, args, Mode::Read, decode).1
}

/// Runs a data-modifying statement as `run_as`; returns the rows processed and any
/// `RETURNING` rows, decoded by `decode`. Triggers fire (so caches everywhere learn of the
/// change).
pub fn modify<T>(
    run_as: pg_sys::Oid,
    query: &'static str,
    args: &[Arg],
    decode: impl FnMut(&Row) -> T,
) -> (u64, Vec<T>) {
    run(Some(run_as), query, args, Mode::Write, decode)
}

/// [`modify`] for a statement whose rows (if any) are not needed.
pub fn execute(run_as: pg_sys::Oid, query: &'static str, args: &[Arg]) -> u64 {
    modify(run_as, query, args, |_| ()).0
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
    // SAFETY: callable in any transaction state that runs queries (see above); the result is
    // owned by the snapshot manager and copied by whoever uses it.
    unsafe { pg_sys::GetCatalogSnapshot(pg_sys::InvalidOid) }
}

/// The kept plan of `query`, prepared on first use.
///
/// # Safety
/// Must be called inside an SPI connection (`SPI_prepare` needs one).
unsafe fn prepared_plan(query: &'static str, args: &[Arg]) -> pg_sys::SPIPlanPtr {
    if let Some(plan) = PLANS.with(|plans| plans.borrow().get(query).copied()) {
        return plan as pg_sys::SPIPlanPtr;
    }
    let text = CString::new(query).expect("queries are written without NUL bytes");
    let mut types: Vec<pg_sys::Oid> = args.iter().map(|(oid, _)| *oid).collect();
    // SAFETY: inside an SPI connection (the caller's contract); the text and type array
    // outlive the call, which copies them. A kept plan lives in its own memory context for
    // the life of the backend, so the pointer stays valid in PLANS.
    let plan =
        unsafe { pg_sys::SPI_prepare(text.as_ptr(), types.len() as i32, types.as_mut_ptr()) };
    // SAFETY: `plan` is the non-NULL plan just prepared.
    if plan.is_null() || unsafe { pg_sys::SPI_keepplan(plan) } != 0 {
        raise(Failure::ObjectsAltered {
            what: "an internal query could not be prepared".into(),
        });
    }
    PLANS.with(|plans| plans.borrow_mut().insert(query, plan as usize));
    plan
}

fn run<T>(
    run_as: Option<pg_sys::Oid>,
    query: &'static str,
    args: &[Arg],
    mode: Mode,
    decode: impl FnMut(&Row) -> T,
) -> (u64, Vec<T>) {
    // SAFETY: runs inside the SPI connection `in_owner_context` opens; the argument arrays
    // outlive the execution; rows are decoded before the connection closes.
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
        (pg_sys::SPI_processed, decode_rows(decode))
    })
}

/// Runs `body` inside an SPI connection as `run_as` (or the current user), with
/// `search_path` pinned to `pg_catalog, pg_temp`.
fn in_owner_context<R>(run_as: Option<pg_sys::Oid>, body: impl FnOnce() -> R) -> R {
    // SAFETY: user id, security context and GUC nest level are saved and restored around
    // `body`; on an ERROR, (sub)transaction abort restores them (as for SECURITY DEFINER).
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

/// Decodes the rows of the query just run, inside its SPI connection.
///
/// # Safety
/// Must be called inside the SPI connection of the query just run, before it closes.
unsafe fn decode_rows<T>(mut decode: impl FnMut(&Row) -> T) -> Vec<T> {
    // SAFETY: SPI's result globals of the query just run (the caller's contract).
    let (table, processed) = unsafe { (pg_sys::SPI_tuptable, pg_sys::SPI_processed) };
    if table.is_null() {
        return Vec::new();
    }
    // SAFETY: a non-NULL SPI_tuptable holds `processed` tuples and their descriptor.
    let tupdesc = unsafe { (*table).tupdesc };
    (0..processed as usize)
        .map(|row| {
            // SAFETY: `row` < SPI_processed, the number of tuples in `vals`.
            let tuple = unsafe { *(*table).vals.add(row) };
            decode(&Row { tuple, tupdesc })
        })
        .collect()
}
