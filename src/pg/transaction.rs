//! The state of the current transaction and process, as the identity code asks about it.

use pgrx::pg_sys;

/// Whether a transaction block (`BEGIN` … `COMMIT`, or a procedure's) is open, rather than
/// a single statement running in its own transaction.
pub fn in_transaction_block() -> bool {
    // SAFETY: reads this backend's transaction state; it cannot fail.
    unsafe { pg_sys::IsTransactionBlock() }
}

/// Whether this process is a parallel worker (which restores its leader's settings).
pub fn in_parallel_worker() -> bool {
    // SAFETY: a process-global integer the server sets before a parallel worker runs
    // anything; it is only read here.
    unsafe { pg_sys::ParallelWorkerNumber >= 0 }
}

/// The current subtransaction (the top transaction's id when none is open).
pub fn current_subtransaction() -> pg_sys::SubTransactionId {
    // SAFETY: reads the transaction state's counter; callable anywhere in a transaction.
    unsafe { pg_sys::GetCurrentSubTransactionId() }
}
