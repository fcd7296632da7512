//! Reads of the extension's own tables on behalf of any caller.
//!
//! Verification runs as whatever role calls it, but the tables it reads are closed to those
//! roles. So each read runs as the table's owner (what a SECURITY DEFINER function does), in a
//! security-restricted operation, with `search_path` pinned to `pg_catalog, pg_temp` (the
//! caller's path could otherwise put its own functions or operators into our query, to be
//! run as the owner), under the latest snapshot: a cache filled from it is never older than
//! the invalidations this backend has already processed (see `keyring.rs`).

use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use pgrx::spi::Spi;

/// One row, every column in its text form (`None` for NULL).
pub type TextRow = Vec<Option<String>>;

/// The OID and owner of a relation of the extension's schema, or `None` when it does not
/// exist (the library may be loaded in a database without the extension).
pub fn relation_and_owner(name: &str) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    let query = format!(
        "select c.oid::int8, c.relowner::int8 from pg_catalog.pg_class c \
         join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = 'auth' and c.relname = {}",
        pgrx::spi::quote_literal(name)
    );
    let rows = select_as(None, &query);
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

/// Runs a read-only query as `run_as` (or the current user) and returns its rows as text.
pub fn select_as(run_as: Option<pg_sys::Oid>, query: &str) -> Vec<TextRow> {
    let query = CString::new(query).expect("queries are written without NUL bytes");
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
        let plan = pg_sys::SPI_prepare(query.as_ptr(), 0, std::ptr::null_mut());
        if plan.is_null() {
            pgrx::error!("pg_session_auth: could not prepare an internal query");
        }
        // GetLatestSnapshot() may not be taken during a parallel operation; there, use the
        // statement's snapshot (the caller then keeps the result only for this transaction).
        let snapshot = if pg_sys::IsInParallelMode() {
            pg_sys::GetActiveSnapshot()
        } else {
            pg_sys::GetLatestSnapshot()
        };
        let status = pg_sys::SPI_execute_snapshot(
            plan,
            std::ptr::null_mut(),
            std::ptr::null(),
            snapshot,
            std::ptr::null_mut(),
            true,
            false,
            0,
        );
        if status != pg_sys::SPI_OK_SELECT as i32 {
            pgrx::error!("pg_session_auth: an internal query failed (SPI status {status})");
        }
        let rows = collect_rows();
        pg_sys::AtEOXact_GUC(true, guc_level);
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        rows
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

/// Whether a cache filled now may outlive the current transaction (see [`select_as`]).
pub fn snapshot_is_latest() -> bool {
    unsafe { !pg_sys::IsInParallelMode() }
}
