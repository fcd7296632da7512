//! Reading a column of every row of a table straight from its heap, under a dirty snapshot:
//! no SQL, no permission checks — for the extension's own tables.
//!
//! A dirty snapshot sees, besides committed rows, rows whose writer is still in progress — an
//! open transaction, or a prepared one (`PREPARE TRANSACTION`) that may commit at any later
//! time — so the scan never waits for writers. A row deleted by a committed transaction is
//! not seen.

use std::ffi::CStr;

use pgrx::{pg_sys, FromDatum};

use crate::errors::{raise, Failure};

/// Hands the non-NULL values of the `uuid` column `column` of every row of `relation` that a
/// dirty snapshot sees to `each`. Without such a column, nothing; a column of another type
/// means the table was altered (`55000`).
pub fn each_uuid(relation: pg_sys::Oid, column: &CStr, mut each: impl FnMut(&[u8; 16])) {
    each_datum(relation, column, pg_sys::UUIDOID, |datum| {
        // SAFETY: a uuid datum (the column's type was checked) points at its 16 bytes,
        // alive while the scan is on the tuple.
        each(unsafe { &*(datum.cast_mut_ptr::<[u8; 16]>()) })
    });
}

/// As [`each_uuid`], for a `text` column.
pub fn each_text(relation: pg_sys::Oid, column: &CStr, mut each: impl FnMut(&str)) {
    each_datum(relation, column, pg_sys::TEXTOID, |datum| {
        // SAFETY: a text datum (the column's type was checked) of the tuple being read;
        // from_datum detoasts it if need be.
        let text = unsafe { <&str>::from_datum(datum, false) }.unwrap_or_default();
        each(text)
    });
}

/// Hands the non-NULL values of `column` (of type `expected`) of every row a dirty snapshot
/// sees to `each`: a sequential scan of the heap.
fn each_datum(
    relation: pg_sys::Oid,
    column: &CStr,
    expected: pg_sys::Oid,
    mut each: impl FnMut(pg_sys::Datum),
) {
    let lockmode = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    // SAFETY: opens the relation by OID under a lock that writers do not conflict with; it
    // raises an error if there is no such relation.
    let rel = unsafe { pg_sys::table_open(relation, lockmode) };
    // SAFETY: a catalog lookup by relation and a NUL-terminated name.
    let attnum = unsafe { pg_sys::get_attnum(relation, column.as_ptr()) };
    if attnum <= 0 {
        // SAFETY: closes what was opened above, with the same lock mode.
        unsafe { pg_sys::table_close(rel, lockmode) };
        return;
    }
    // SAFETY: a catalog lookup of an attribute that exists.
    if unsafe { pg_sys::get_atttype(relation, attnum) } != expected {
        raise(Failure::ObjectsAltered {
            what: format!("the column {column:?} does not have the type it was created with"),
        });
    }
    // SAFETY: an all-zero SnapshotData with the dirty type is what InitDirtySnapshot makes;
    // the scan fills in the rest as it goes. It outlives the scan (ended below).
    let mut dirty: pg_sys::SnapshotData = unsafe { std::mem::zeroed() };
    dirty.snapshot_type = pg_sys::SnapshotType::SNAPSHOT_DIRTY;
    // SAFETY: `rel` is open and locked; no scan keys.
    let scan = unsafe { pg_sys::table_beginscan(rel, &mut dirty, 0, std::ptr::null_mut()) };
    // SAFETY: an open relation's tuple descriptor.
    let tupdesc = unsafe { (*rel).rd_att };
    // SAFETY: as above.
    let natts = unsafe { (*tupdesc).natts } as usize;
    let mut values = vec![pg_sys::Datum::from(0); natts];
    let mut nulls = vec![true; natts];
    let index = attnum as usize - 1;
    loop {
        pgrx::check_for_interrupts!();
        // SAFETY: the scan begun above, over a heap relation (the extension's tables).
        let tuple =
            unsafe { pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection) };
        if tuple.is_null() {
            break;
        }
        // SAFETY: a tuple of `rel`, deformed into arrays of its descriptor's `natts`.
        unsafe {
            pg_sys::heap_deform_tuple(tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr())
        };
        if !nulls[index] {
            each(values[index]);
        }
    }
    // SAFETY: ends the scan begun above and closes the relation with the mode it was opened
    // with. (On an error or a cancel inside the loop, the transaction's abort does both.)
    unsafe {
        pg_sys::heap_endscan(scan);
        pg_sys::table_close(rel, lockmode);
    }
}
