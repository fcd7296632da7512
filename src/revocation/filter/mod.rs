//! The shared revocation filter: a token that no revocation names is cleared without a query.
//!
//! With `shared_preload_libraries = 'pg_session_auth'`, shared memory holds one Bloom filter
//! (`pg_session_auth_core::revocation_filter`) per database, of every key in its revocation
//! tables. A check probes it first ([`screen`]); only a token with a key that may be in it is
//! looked up exactly (`revocation/mod.rs`). Without the preload, or on a hot standby, every
//! new token is looked up.
//!
//! The filter must never miss a committed revocation. That holds because:
//! - every write to a revocation table fires a row trigger (`note_revocation`, in
//!   `api/revocation_triggers.rs`) that adds the new key to the filter ([`add`]) while the
//!   writing transaction still holds its table lock, whenever the filter is `BUILDING` or
//!   `VALID`;
//! - a build (`build.rs`, run by a background worker that a check starts — `worker.rs` — or
//!   by `auth.rebuild_revocation_filter()`) clears the filter, marks it `BUILDING`, then adds
//!   every row it reads under a dirty snapshot: committed rows and rows of writers still in
//!   progress, prepared transactions included. A writer's trigger runs after its row is in
//!   the heap, so a key added to the words before they were cleared belongs to a row the scan
//!   sees, and a key added after lands in the new filter. No build waits for writers, so none
//!   gives up, and a rebuild never leaves a valid filter invalid unless it fails;
//! - readers use a filter only while it is `VALID` for their database and for the current
//!   incarnation of the tables (their OIDs), and re-read its status after probing, so a
//!   rebuild that starts meanwhile sends them to the exact lookup (a sequence lock). A claim
//!   changes the status before it rewrites the slot's identity, so a reader that sees the new
//!   identity also sees the status change. These transitions and the rules for who may build
//!   when are the slot state machine, `pg_session_auth_core::revocation_filter::slot`, tested
//!   with threads there; `region.rs` keeps its slots in shared memory;
//! - a session whose own transaction has written to the tables does not build (its snapshot
//!   would see its own uncommitted deletions, which a rollback would bring back);
//! - readers trust the filter only while the tables' triggers are exactly as the extension
//!   created them and enabled `ALWAYS`, and only if no trigger on the tables (or their
//!   functions) has changed since it was built ([`Incarnation`], from `revocation/tables.rs`):
//!   a filter built before a trigger was disabled and enabled again may lack keys written in
//!   between. (Writing with the triggers disabled and restoring them in the same transaction
//!   also changes their catalog rows, so it is caught too.)
//!
//! Removals (purges) leave their bits set: stale bits only cost lookups. Once more keys have
//! been added than the filter holds at about 0.4% false positives (and twice as many as it held
//! after its last build), the next check has it rebuilt; `auth.rebuild_revocation_filter()`
//! does so on demand, e.g. after a scheduled purge.
//!
//! Modules: this one is what the rest of the extension uses; `region` the shared memory,
//! `build` a build, `worker` the build worker. They call each other only downwards
//! (mod → worker → build → region, and `build` → `revocation::tables`); none calls back up.

mod build;
mod region;
mod worker;

use pg_session_auth_core::revocation_filter::slot::{is_future, RETRY_AFTER_MS};
use pg_session_auth_core::revocation_filter::FilterKey;

pub use build::{build_here, BuildOutcome};
pub use pg_session_auth_core::revocation_filter::slot::{Incarnation, Screening};
pub use region::request_shared_memory;

use crate::pg::locks;

thread_local! {
    /// When this backend, whose database has no slot, may next look for one.
    static NEXT_SLOT_SEARCH: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Screens `keys` against this database's filter for `incarnation` of the tables. When the
/// filter is missing, stale or too full, asks a background worker to build it and answers
/// [`Screening::LookUp`] meanwhile.
pub fn screen<'k>(
    incarnation: &Incarnation,
    keys: impl Iterator<Item = FilterKey<'k>>,
) -> Screening {
    let Some(shared) = region::shared() else {
        return Screening::LookUp;
    };
    if locks::recovery_in_progress() {
        // Nothing maintains a filter from replayed WAL.
        return Screening::LookUp;
    }
    let database = locks::my_database().to_u32();
    let slots = shared.slots();
    let found = slots.slot_of(database);
    let reading = found.and_then(|i| slots.begin_read(i, database, incarnation));
    let needs_build = match found {
        // A slot may be free, or one of a dropped database reusable (looked for once a
        // second, under the lock, by `build`).
        None => {
            let now = locks::now();
            let due = !is_future(NEXT_SLOT_SEARCH.get(), now, RETRY_AFTER_MS);
            if due {
                NEXT_SLOT_SEARCH.set(now + RETRY_AFTER_MS * 1000);
            }
            due && slots.any_claimable(build::database_dropped)
        }
        Some(i) => slots.needs_build(i, reading.is_some(), locks::is_live_backend, locks::now),
    };
    if needs_build {
        // Built by a background worker: no request waits for a build or fails with it.
        worker::request_build(&shared, database);
    }
    match reading {
        Some(reading) => slots.screen(reading, keys),
        None => Screening::LookUp,
    }
}

/// Adds a key written to a revocation table of this database (from the row trigger).
pub fn add(key: FilterKey<'_>) {
    if let Some(shared) = region::shared() {
        shared.slots().add(locks::my_database().to_u32(), key);
    }
}

/// The state of this database's filter, for `auth.revocation_filter()`.
pub struct Status {
    pub state: &'static str,
    pub keys: i64,
    pub capacity: i64,
    pub bytes: i64,
    pub builds: i64,
}

pub fn status() -> Status {
    let unavailable = |state| Status {
        state,
        keys: 0,
        capacity: 0,
        bytes: 0,
        builds: 0,
    };
    let Some(shared) = region::shared() else {
        return unavailable("unavailable");
    };
    if locks::recovery_in_progress() {
        return unavailable("unavailable");
    }
    let slots = shared.slots();
    let Some(i) = slots.slot_of(locks::my_database().to_u32()) else {
        return unavailable("free");
    };
    let slot = slots.slot(i);
    Status {
        state: slot.state().name(),
        keys: slot.keys() as i64,
        capacity: slots.filter(i).capacity() as i64,
        bytes: shared.bytes_per_slot() as i64,
        builds: slot.builds() as i64,
    }
}
