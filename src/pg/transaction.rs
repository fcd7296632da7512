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

/// Runs `body` in a subtransaction of its own, which is kept (its effects and locks pass to
/// the enclosing transaction) when `keep` says so and rolled back otherwise — releasing the
/// row locks it took. An error inside `body` rolls the subtransaction back and is raised on,
/// as PL/Python does, so a caller's exception block finds the subtransactions as it left them.
pub fn in_subtransaction<R>(body: impl FnOnce() -> R, keep: impl FnOnce(&R) -> bool) -> R {
    // SAFETY: the same steps PL/pgSQL takes for a block with an exception clause: the memory
    // context and resource owner current before are restored after the subtransaction ends
    // (BeginInternalSubTransaction switches to the subtransaction's context).
    let (context, owner) = unsafe {
        let saved = (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner);
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(saved.0);
        saved
    };
    let end = |kept: bool| {
        // SAFETY: the subtransaction begun above is the current one (`body` ran any SPI
        // connection it opened to completion, or pgrx unwound it and flushed the error
        // state); the saved context and owner outlive it.
        unsafe {
            if kept {
                pg_sys::ReleaseCurrentSubTransaction();
            } else {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
            }
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(result) => {
            end(keep(&result));
            result
        }
        Err(error) => {
            end(false);
            std::panic::resume_unwind(error)
        }
    }
}

/// Runs `body` in a subtransaction of its own, kept when it succeeds; an error inside it rolls
/// the subtransaction back and comes back as its message instead of being raised (a Rust
/// panic that is not a PostgreSQL error is raised on).
pub fn try_in_subtransaction<R>(body: impl FnOnce() -> R) -> Result<R, String> {
    use pgrx::pg_sys::panic::CaughtError;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        in_subtransaction(body, |_| true)
    }));
    let payload = match outcome {
        Ok(result) => return Ok(result),
        Err(payload) => payload,
    };
    // The error's data was copied and the error state flushed when it crossed into Rust.
    match payload.downcast::<CaughtError>() {
        Ok(caught) => match *caught {
            CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => {
                Err(report.message().to_owned())
            }
            panic @ CaughtError::RustPanic { .. } => panic.rethrow(),
        },
        Err(other) => std::panic::resume_unwind(other),
    }
}

/// Runs `body` as in a read-only transaction: any write it attempts (in functions it calls,
/// too) fails with `25006`. The setting is restored however `body` ends.
pub fn read_only<R>(body: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: a backend-global flag, restored to what it was.
            unsafe { pg_sys::XactReadOnly = self.0 };
        }
    }
    // SAFETY: as above; the executor checks it before every write.
    let _restore = Restore(unsafe { pg_sys::XactReadOnly });
    // SAFETY: as above.
    unsafe { pg_sys::XactReadOnly = true };
    body()
}
