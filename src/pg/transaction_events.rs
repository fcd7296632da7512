//! Transaction and subtransaction boundaries, as per-backend state needs to follow them.

use std::cell::Cell;

use pgrx::pg_sys;

/// A point in a transaction's life that a listener may act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionEvent {
    /// `PREPARE TRANSACTION` is about to run; an ERROR here refuses it.
    PrePrepare,
    /// The transaction committed, aborted or was prepared (in this backend or a parallel
    /// worker of it).
    Ended,
    /// Anything else (pre-commit and the like).
    Other,
}

/// A subtransaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubtransactionEvent {
    /// Its effects now belong to `parent`.
    Committed {
        subtransaction: pg_sys::SubTransactionId,
        parent: pg_sys::SubTransactionId,
    },
    /// Rolled back (`ROLLBACK TO SAVEPOINT`, an exception block).
    Aborted {
        subtransaction: pg_sys::SubTransactionId,
    },
    Other,
}

type Listeners = (fn(TransactionEvent), fn(SubtransactionEvent));

thread_local! {
    static LISTENERS: Cell<Option<Listeners>> = const { Cell::new(None) };
}

/// Calls the listeners at every transaction and subtransaction event of this backend. One
/// pair per backend; registered once, from `_PG_init`.
pub fn listen(on_transaction: fn(TransactionEvent), on_subtransaction: fn(SubtransactionEvent)) {
    LISTENERS.with(|slot| slot.set(Some((on_transaction, on_subtransaction))));
    // SAFETY: registers plain functions without argument state; PostgreSQL keeps them for
    // the life of the backend.
    unsafe {
        pg_sys::RegisterXactCallback(Some(transaction_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subtransaction_callback), std::ptr::null_mut());
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn transaction_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    let event = match event {
        XACT_EVENT_PRE_PREPARE => TransactionEvent::PrePrepare,
        XACT_EVENT_COMMIT
        | XACT_EVENT_ABORT
        | XACT_EVENT_PARALLEL_COMMIT
        | XACT_EVENT_PARALLEL_ABORT
        | XACT_EVENT_PREPARE => TransactionEvent::Ended,
        _ => TransactionEvent::Other,
    };
    if let Some((on_transaction, _)) = LISTENERS.with(Cell::get) {
        on_transaction(event);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn subtransaction_callback(
    event: pg_sys::SubXactEvent::Type,
    subtransaction: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    let event = match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => SubtransactionEvent::Committed {
            subtransaction,
            parent,
        },
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
            SubtransactionEvent::Aborted { subtransaction }
        }
        _ => SubtransactionEvent::Other,
    };
    if let Some((_, on_subtransaction)) = LISTENERS.with(Cell::get) {
        on_subtransaction(event);
    }
}
