//! The server's invalidation messages: what per-backend caches listen to.

use std::cell::Cell;

use pgrx::pg_sys;

/// Told which relation changed (`None`: every relation).
pub type Listener = fn(Option<pg_sys::Oid>);

thread_local! {
    static LISTENER: Cell<Option<Listener>> = const { Cell::new(None) };
}

/// Calls `listener` with each relation whose relcache entry is invalidated (`None`: every
/// relation). One listener per backend; registered once, from `_PG_init`.
pub fn on_relcache_invalidation(listener: Listener) {
    LISTENER.with(|slot| slot.set(Some(listener)));
    // SAFETY: registers a plain function with no argument state; PostgreSQL keeps it for the
    // life of the backend (the callback array is process-global and never unregistered).
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_callback), pg_sys::Datum::from(0));
    }
}

thread_local! {
    static FUNCTION_LISTENER: Cell<Option<fn()>> = const { Cell::new(None) };
}

/// Calls `listener` whenever any function's catalog entry (`pg_proc`) changes: created,
/// replaced, renamed, dropped. One listener per backend; registered once, from `_PG_init`.
pub fn on_function_invalidation(listener: fn()) {
    FUNCTION_LISTENER.with(|slot| slot.set(Some(listener)));
    // SAFETY: as in `on_relcache_invalidation`; PROCOID is a syscache identifier.
    unsafe {
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::PROCOID as i32,
            Some(function_callback),
            pg_sys::Datum::from(0),
        );
    }
}

unsafe extern "C-unwind" fn function_callback(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    if let Some(listener) = FUNCTION_LISTENER.with(Cell::get) {
        listener();
    }
}

/// Processes the invalidation messages queued for this backend (a flag check when none are).
pub fn accept_pending() {
    // SAFETY: callable at any time inside a transaction; it runs the registered callbacks.
    unsafe { pg_sys::AcceptInvalidationMessages() };
}

/// Queues a relcache invalidation of `relid`, sent to every backend when this transaction
/// commits (and replayed locally when it rolls back).
pub fn invalidate_relation(relid: pg_sys::Oid) {
    // SAFETY: queues a message for a relation OID; an OID of no relation is harmless.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
}

unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let relid = (relid != pg_sys::InvalidOid).then_some(relid);
    if let Some(listener) = LISTENER.with(Cell::get) {
        listener(relid);
    }
}
