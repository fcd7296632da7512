//! Building a database's filter: claim its slot, fill it from the tables under a dirty
//! snapshot, mark it valid.
//!
//! A build is run by a background worker that a check starts (`worker.rs`), or by
//! `auth.rebuild_revocation_filter()` in the calling session. It claims the slot — which
//! clears it and marks it `BUILDING` — then adds every row it reads under a dirty snapshot
//! ([`fill`]): committed rows and rows of writers still in progress, prepared transactions
//! included. A writer's trigger runs after its row is in the heap, so a key added to the
//! words before they were cleared belongs to a row the scan sees, and a key added after
//! lands in the new filter (the slot's state machine, `pg_session_auth_core::
//! revocation_filter::slot`, says how). No build waits for writers, so none gives up, and a
//! rebuild never leaves a valid filter invalid unless it fails.
//!
//! A session whose own transaction has written to the tables does not build: its snapshot
//! would see its own uncommitted deletions, which a rollback would bring back
//! ([`may_build_here`]).

use pg_session_auth_core::revocation_filter::slot::{Claimant, Incarnation, Refusal};
use pg_session_auth_core::revocation_filter::{FilterKey, RevocationFilter};
use pgrx::pg_sys;
use pgrx::PgTryBuilder;

use super::region::{self, Shared};
use crate::pg::{heap_scan, locks};
use crate::revocation::tables::find_tables;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BuildOutcome {
    Built,
    /// Another session builds it, it was built meanwhile, or a build failed recently.
    NotNow,
    /// All slots are taken by other databases.
    NoSlot,
    /// This session may not build now (see [`may_build_here`]).
    NotHere,
    /// No shared filter (not preloaded, turned off, or a standby).
    Unavailable,
}

/// Builds this database's filter in this session, from the tables as they are now: only when
/// it is not valid (the build worker), or with `force` also when it is
/// (`auth.rebuild_revocation_filter()`). Never from tables whose triggers are not intact.
pub fn build_here(force: bool) -> BuildOutcome {
    let tables = find_tables();
    if !tables.triggers_intact {
        return BuildOutcome::NotHere;
    }
    let incarnation = tables.incarnation();
    match region::shared() {
        Some(shared) if !locks::recovery_in_progress() => build(&shared, &incarnation, force),
        _ => BuildOutcome::Unavailable,
    }
}

/// Whether this session may build: not in a parallel operation (which may not take a fresh
/// snapshot), and not after its own transaction has written to the tables.
fn may_build_here(tables: &[pg_sys::Oid; 3]) -> bool {
    !locks::in_parallel_mode() && !tables.iter().any(|table| locks::holds_write_lock(*table))
}

/// Whether the database a slot was claimed for has been dropped (its slot may be reused).
pub(super) fn database_dropped(database: u32) -> bool {
    !locks::database_exists(pg_sys::Oid::from(database))
}

/// Clears and refills this database's filter from the tables. With `force`, also when it is
/// valid. See the module documentation for why no committed key can be missed.
fn build(shared: &Shared, incarnation: &Incarnation, force: bool) -> BuildOutcome {
    let tables = incarnation.tables.map(pg_sys::Oid::from);
    if !may_build_here(&tables) {
        return BuildOutcome::NotHere;
    }
    let claimant = Claimant {
        database: locks::my_database().to_u32(),
        incarnation,
        builder: locks::my_pid(),
        now: locks::now(),
        force,
    };
    let slots = shared.slots();
    // Slots of dropped databases may be reused; found out before taking the lock (catalog
    // access under an LWLock is not allowed), confirmed under it by an unchanged status.
    let abandoned = slots.abandoned(database_dropped);
    let claim = match slots.claim(&claimant, &abandoned, locks::is_live_backend) {
        Ok(claim) => claim,
        Err(Refusal::NotNow) => return BuildOutcome::NotNow,
        Err(Refusal::NoSlot) => return BuildOutcome::NoSlot,
    };
    let filter = slots.filter(claim.slot());
    // On any error (a cancel, a statement timeout while reading), leave the slot to the next
    // build instead of "being built" by a session that has moved on.
    let filled = PgTryBuilder::new(|| fill(&filter, &tables))
        .catch_others(|error| {
            slots.give_up(&claim, locks::now());
            error.rethrow()
        })
        .execute();
    if slots.finish(claim, filled) {
        BuildOutcome::Built
    } else {
        BuildOutcome::NotNow // Taken over by a later build.
    }
}

/// Adds every key in the tables; returns how many.
///
/// Read under a dirty snapshot (`pg::heap_scan`): besides committed rows it sees rows whose
/// writer is still in progress — an open transaction, or a prepared one (`PREPARE
/// TRANSACTION`) that may commit at any later time — so no build has to wait for writers. A
/// writer's row is in the heap before its row trigger runs: a key whose trigger added it to
/// the words this build cleared belongs to a row that was already there when this scan
/// began. Rows of writers that roll back only cost false positives. A row deleted by a
/// committed transaction is not seen.
fn fill(filter: &RevocationFilter<'_>, tables: &[pg_sys::Oid; 3]) -> u64 {
    let [sessions, users, tokens] = *tables;
    let mut keys = 0u64;
    heap_scan::each_uuid(sessions, c"session_id", |id| {
        filter.insert(FilterKey::Session(id));
        keys += 1;
    });
    heap_scan::each_text(users, c"user_id", |user| {
        filter.insert(FilterKey::User(user));
        keys += 1;
    });
    heap_scan::each_text(tokens, c"jti", |jti| {
        filter.insert(FilterKey::Token(jti));
        keys += 1;
    });
    keys
}
