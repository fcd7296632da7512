//! Keeping per-backend caches of the extension's tables current.
//!
//! A statement-level trigger on each state table queues a relcache invalidation for it.
//! PostgreSQL delivers it to every backend when the change commits (to hot standbys through
//! WAL), to the writing backend at its next command, and — on ROLLBACK or ROLLBACK TO
//! SAVEPOINT — it replays the writer's own messages locally, so a cache filled from
//! uncommitted rows is dropped too. Our relcache callback bumps the generation of the cache
//! fed by that table; a cache is used only while its generation is unchanged. Callers first
//! run `AcceptInvalidationMessages()` (a flag check when nothing is queued), so a committed
//! change is seen from the next statement on, even inside a long transaction.

use std::cell::{Cell, RefCell};

use pgrx::pg_sys;
use pgrx::prelude::*;

/// The caches, one generation counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    Keyring = 0,
    Revocations = 1,
}

thread_local! {
    static GENERATIONS: [Cell<u64>; 2] = const { [Cell::new(0), Cell::new(0)] };
    static WATCHED: RefCell<Vec<(pg_sys::Oid, Cache)>> = const { RefCell::new(Vec::new()) };
}

/// Registers the relcache callback. Called once, from `_PG_init`.
pub fn register_callback() {
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_invalidation),
            pg_sys::Datum::from(0),
        );
    }
}

pub fn generation(cache: Cache) -> u64 {
    GENERATIONS.with(|generations| generations[cache as usize].get())
}

pub fn bump(cache: Cache) {
    GENERATIONS.with(|generations| {
        let counter = &generations[cache as usize];
        counter.set(counter.get() + 1);
    });
}

/// Changes of `relid` invalidate `cache` from now on.
pub fn watch(relid: pg_sys::Oid, cache: Cache) {
    WATCHED.with(|watched| {
        let mut watched = watched.borrow_mut();
        if !watched.contains(&(relid, cache)) {
            watched.push((relid, cache));
        }
    });
}

/// Processes queued invalidations; returns the cache's current generation.
pub fn current_generation(cache: Cache) -> u64 {
    unsafe { pg_sys::AcceptInvalidationMessages() };
    generation(cache)
}

unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // InvalidOid means "every relation" (e.g. after the invalidation queue overflowed).
    if relid == pg_sys::InvalidOid {
        bump(Cache::Keyring);
        bump(Cache::Revocations);
        return;
    }
    let hit: Vec<Cache> = WATCHED.with(|watched| {
        watched
            .borrow()
            .iter()
            .filter(|(oid, _)| *oid == relid)
            .map(|(_, c)| *c)
            .collect()
    });
    for cache in hit {
        bump(cache);
    }
}

/// Statement-level trigger on the extension's state tables: tells every backend to drop what
/// it cached from them once this transaction commits.
#[pg_trigger]
fn invalidate_cached_state<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(trigger.relid()?) };
    Ok(None)
}
