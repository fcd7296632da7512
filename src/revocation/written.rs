//! Which (sub)transactions of the current transaction wrote a revocation through the
//! extension's functions, followed through subtransaction commit and abort: a transaction
//! that signed out treats its own revoked identity as none (instead of raising and thereby
//! undoing the sign-out), and may not be prepared.

use std::cell::RefCell;

use pgrx::pg_sys;

use crate::errors::{raise, Failure};
use crate::gucs;
use crate::pg::transaction;
use crate::pg::transaction_events::{self, SubtransactionEvent, TransactionEvent};

thread_local! {
    /// The (sub)transactions of the current transaction that wrote a revocation through the
    /// extension's functions and have not been rolled back.
    static WRITTEN_BY: RefCell<Vec<pg_sys::SubTransactionId>> = const { RefCell::new(Vec::new()) };
}

/// Follows revocations written in this transaction through subtransaction commit and abort.
/// Called once, from `_PG_init`.
pub fn register_transaction_callbacks() {
    transaction_events::listen(on_transaction_event, on_subtransaction_event);
}

fn on_transaction_event(event: TransactionEvent) {
    match event {
        TransactionEvent::PrePrepare if revocation_written_in_this_transaction() => {
            // A prepared transaction keeps its row locks until someone ends it: a prepared
            // sign-out would make every later revocation of the same session or user wait
            // on it.
            raise(Failure::PrepareAfterRevocation)
        }
        TransactionEvent::Ended => WRITTEN_BY.with(|written| written.borrow_mut().clear()),
        _ => {}
    }
}

fn on_subtransaction_event(event: SubtransactionEvent) {
    WRITTEN_BY.with(|written| {
        let mut written = written.borrow_mut();
        match event {
            SubtransactionEvent::Committed {
                subtransaction,
                parent,
            } => {
                for id in written.iter_mut().filter(|id| **id == subtransaction) {
                    *id = parent;
                }
            }
            SubtransactionEvent::Aborted { subtransaction } => {
                written.retain(|id| *id != subtransaction)
            }
            SubtransactionEvent::Other => {}
        }
    });
}

/// Notes that the current (sub)transaction wrote a revocation: here, and in a transaction-
/// local internal setting that parallel workers inherit (they cannot see this backend's list).
pub fn note_revocation_written() {
    gucs::note_revoked_in_transaction();
    let current = transaction::current_subtransaction();
    WRITTEN_BY.with(|written| {
        let mut written = written.borrow_mut();
        if !written.contains(&current) {
            written.push(current);
        }
    });
}

/// Whether this transaction wrote a revocation through the extension's functions (and has
/// not rolled it back). Claim functions then treat a revoked identity as none instead of
/// raising, so that signing out does not abort — and thereby undo — its own transaction.
pub fn revocation_written_in_this_transaction() -> bool {
    if transaction::in_parallel_worker() {
        return gucs::revoked_in_transaction();
    }
    WRITTEN_BY.with(|written| !written.borrow().is_empty())
}
