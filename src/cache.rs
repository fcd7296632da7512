//! Per-backend caches of the extension's tables, kept current by invalidation.
//!
//! A statement-level trigger on each state table (`api/cache_invalidation.rs`) queues a
//! relcache invalidation for it. PostgreSQL delivers it to every backend when the change
//! commits (to hot standbys through WAL), to the writing backend at its next command, and —
//! on ROLLBACK or ROLLBACK TO SAVEPOINT — it replays the writer's own messages locally, so a
//! cache filled from uncommitted rows is dropped too. Our relcache callback bumps the
//! generation of the [`Source`] fed by that table; a [`GenerationCache`] holds one value per
//! backend and uses it only while its source's generation is unchanged. Before each use it
//! first processes queued invalidations (a flag check when nothing is queued), so a committed
//! change is seen from the next statement on, even inside a long transaction.
//!
//! What a cache may hold: only what was read under a snapshot taken after the invalidations
//! it is checked against were processed (`pg::owner_spi` takes a fresh one for every read),
//! so nothing read under an older snapshot outlives the generation it was read in.

use std::cell::{Cell, RefCell};

use pgrx::pg_sys;

use crate::activity::stats::{self, Stat};
use crate::pg::invalidation as pg_invalidation;

/// What a cache is derived from: one generation counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `auth.keys`.
    Keyring = 0,
    /// `auth.revoked_sessions`, `auth.revoked_users`, `auth.revoked_tokens`.
    Revocations = 1,
    /// `auth.signing_key_material` (and `auth.keys`, where a signing key is retired).
    SigningKeys = 2,
    /// `auth.activity_rules`.
    ActivityRules = 3,
}

const SOURCES: [Source; 4] = [
    Source::Keyring,
    Source::Revocations,
    Source::SigningKeys,
    Source::ActivityRules,
];

thread_local! {
    static GENERATIONS: [Cell<u64>; 4] =
        const { [Cell::new(0), Cell::new(0), Cell::new(0), Cell::new(0)] };
    static WATCHED: RefCell<Vec<(pg_sys::Oid, Source)>> = const { RefCell::new(Vec::new()) };
}

/// A value derived from the tables of one [`Source`], rebuilt when they change.
pub struct GenerationCache<T> {
    source: Source,
    kept: RefCell<Option<Generation<T>>>,
}

struct Generation<T> {
    number: u64,
    value: T,
}

impl<T> GenerationCache<T> {
    pub const fn new(source: Source) -> Self {
        GenerationCache {
            source,
            kept: RefCell::new(None),
        }
    }

    /// Runs `use_value` on the current value, first (re)built with `load` when the source
    /// changed since it was built. The value is taken out while in use: `load` and
    /// `use_value` run queries, which may process invalidations and re-enter (a re-entrant
    /// call builds its own). The generation read before `load` is the one stored, so an
    /// invalidation that arrives while loading forces another load next time. An error while
    /// in use drops the value.
    pub fn with<R>(&self, load: impl FnOnce() -> T, use_value: impl FnOnce(&mut T) -> R) -> R {
        let current = current_generation(self.source);
        let kept = self.kept.borrow_mut().take();
        let mut generation = match kept {
            Some(generation) if generation.number == current => {
                stats::count(Stat::CacheHit(self.source));
                generation
            }
            _ => {
                stats::count(Stat::CacheMiss(self.source));
                Generation {
                    number: current,
                    value: load(),
                }
            }
        };
        let result = use_value(&mut generation.value);
        *self.kept.borrow_mut() = Some(generation);
        result
    }
}

/// Registers the invalidation callbacks. Called once, from `_PG_init`.
pub fn register_callback() {
    pg_invalidation::on_relcache_invalidation(on_relation_changed);
    // Custom activity rules are functions, called by name: any change of a function (a drop,
    // a rename, a new one of the same name) re-reads the rules, which name them by OID.
    pg_invalidation::on_function_invalidation(|| bump(Source::ActivityRules));
}

fn bump(source: Source) {
    GENERATIONS.with(|generations| {
        let counter = &generations[source as usize];
        counter.set(counter.get() + 1);
    });
}

/// Changes of `relid` invalidate `source`'s caches from now on.
pub fn watch(relid: pg_sys::Oid, source: Source) {
    WATCHED.with(|watched| {
        let mut watched = watched.borrow_mut();
        if !watched.contains(&(relid, source)) {
            watched.push((relid, source));
        }
    });
}

/// Processes queued invalidations; returns the source's current generation.
fn current_generation(source: Source) -> u64 {
    pg_invalidation::accept_pending();
    GENERATIONS.with(|generations| generations[source as usize].get())
}

/// `relid` changed; `None` means every relation (e.g. after the invalidation queue
/// overflowed).
fn on_relation_changed(relid: Option<pg_sys::Oid>) {
    let Some(relid) = relid else {
        SOURCES.into_iter().for_each(bump);
        return;
    };
    let hit: Vec<Source> = WATCHED.with(|watched| {
        watched
            .borrow()
            .iter()
            .filter(|(oid, _)| *oid == relid)
            .map(|(_, source)| *source)
            .collect()
    });
    hit.into_iter().for_each(bump);
}
