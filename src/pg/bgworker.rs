//! Background workers: starting one for a database, and what its entry point does first.

use std::ffi::CStr;
use std::panic::{RefUnwindSafe, UnwindSafe};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;

use super::compat;

/// A dynamic background worker that runs `function` of the library `library`.
pub struct Worker<'a> {
    /// Shown in `pg_stat_activity.backend_type` of older servers and in the log.
    pub name: &'a str,
    /// Shown in `pg_stat_activity.backend_type`.
    pub worker_type: &'a str,
    pub library: &'a str,
    /// An exported `extern "C-unwind" fn(pg_sys::Datum)`; see [`database_of`].
    pub function: &'a str,
}

impl Worker<'_> {
    /// Starts the worker for `database` (its argument), once recovery has finished, with
    /// database access. False when none could be started (no free `max_worker_processes`
    /// slot).
    pub fn start_for_database(&self, database: pg_sys::Oid) -> bool {
        BackgroundWorkerBuilder::new(self.name)
            .set_type(self.worker_type)
            .set_library(self.library)
            .set_function(self.function)
            .set_argument(Some(pg_sys::Datum::from(database.to_u32())))
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .load_dynamic()
            .is_ok()
    }
}

impl Worker<'_> {
    /// Starts the worker for `database`, handing it `extra` (at most 127 bytes), without
    /// waiting for it. False when none could be started (no free `max_worker_processes`
    /// slot).
    pub fn start_with_extra(&self, database: pg_sys::Oid, extra: &str) -> bool {
        BackgroundWorkerBuilder::new(self.name)
            .set_type(self.worker_type)
            .set_library(self.library)
            .set_function(self.function)
            .set_argument(Some(pg_sys::Datum::from(database.to_u32())))
            .set_extra(extra)
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .load_dynamic()
            .is_ok()
    }
}

/// Runs `body` in a transaction of its own (a worker already connected by [`in_database`]).
pub fn in_transaction<F: FnOnce() + UnwindSafe + RefUnwindSafe>(body: F) {
    BackgroundWorker::transaction(body);
}

/// The `extra` text a worker started by [`Worker::start_with_extra`] was handed.
pub fn extra() -> &'static str {
    BackgroundWorker::get_extra()
}

/// The database a worker started by [`Worker::start_for_database`] is for (its argument).
pub fn database_of(argument: pg_sys::Datum) -> pg_sys::Oid {
    pg_sys::Oid::from(argument.value() as u32)
}

extern "C-unwind" {
    /// PostgreSQL's own SIGTERM handler for backends (`die`), as a plain C function pointer.
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

/// As a backend does: `SIGTERM` (e.g. a fast shutdown) ends the worker at its next interrupt
/// check. Then unblocks signals, which the postmaster started the worker with blocked.
pub fn die_on_sigterm() {
    // SAFETY: `die` is PostgreSQL's async-signal-safe handler for backends (it sets flags
    // and the latch); called at the start of the worker, before anything else.
    unsafe {
        compat::set_signal_handler(pg_sys::SIGTERM as i32, Some(postgres_die));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
}

/// Sets `settings` (name, value) for this worker's whole life, over whatever the database's
/// and role's defaults say (`PGC_SUSET`, `PGC_S_OVERRIDE`). An unknown name or a refused
/// value raises an error.
pub fn override_settings(settings: &[(&CStr, &CStr)]) {
    for (name, value) in settings {
        // SAFETY: NUL-terminated names and values; SetConfigOption copies them.
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_OVERRIDE,
            );
        }
    }
}

/// Connects to `database` (as the bootstrap superuser) and runs `body` in a transaction.
pub fn in_database<F: FnOnce() + UnwindSafe + RefUnwindSafe>(database: pg_sys::Oid, body: F) {
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), None);
    BackgroundWorker::transaction(body);
}
