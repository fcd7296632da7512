//! The build worker: a check that finds its database's filter missing, stale or too full
//! starts one, so that no request waits for a build or fails with it; checks look tokens up
//! meanwhile.

use pg_session_auth_core::revocation_filter::slot::is_future;
use pgrx::prelude::*;

use super::build::build_here;
use super::region::Shared;
use crate::pg::bgworker::{self, Worker};
use crate::pg::{locks, transaction};

/// At most one build worker is started per this interval, cluster-wide.
const WORKER_LAUNCH_INTERVAL_MS: i64 = 200;

const WORKER: Worker = Worker {
    name: "pg_session_auth revocation filter builder",
    worker_type: "pg_session_auth filter builder",
    library: "pg_session_auth",
    function: "pg_session_auth_build_revocation_filter",
};

thread_local! {
    /// When this backend may next log that no worker could be started.
    static NEXT_NO_WORKER_LOG: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Starts a background worker that builds `database`'s filter, unless one was started very
/// recently (it then gets its turn at a later check). Without a free worker slot the checks
/// simply go on looking tokens up.
pub(super) fn request_build(shared: &Shared, database: u32) {
    if transaction::in_parallel_worker() {
        return; // The leader asks.
    }
    let now = locks::now();
    if !shared
        .worker_launches()
        .try_launch(now, WORKER_LAUNCH_INTERVAL_MS)
    {
        return;
    }
    let started = WORKER.start_for_database(pg_sys::Oid::from(database));
    if !started && !is_future(NEXT_NO_WORKER_LOG.get(), now, 60_000) {
        NEXT_NO_WORKER_LOG.set(now + 60_000_000);
        log!(
            "pg_session_auth: no background worker slot free to build the revocation filter; \
             revocations are looked up meanwhile (raise max_worker_processes)"
        );
    }
}

/// The build worker's entry point: connects to the database and builds its filter.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_session_auth_build_revocation_filter(argument: pg_sys::Datum) {
    let database = bgworker::database_of(argument);
    // As a backend does: SIGTERM (e.g. a fast shutdown) ends the build at its next interrupt
    // check; a slot it was building is then taken over by a later build.
    bgworker::die_on_sigterm();
    // Whatever the database's and role's defaults: a plain read-committed transaction whose
    // snapshot never waits, and no client time limits.
    bgworker::override_settings(&[
        (c"default_transaction_isolation", c"read committed"),
        (c"default_transaction_deferrable", c"off"),
        (c"statement_timeout", c"0"),
        (c"lock_timeout", c"0"),
    ]);
    bgworker::in_database(database, || {
        build_here(false);
    });
}
