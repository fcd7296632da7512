//! The per-backend keyring cache.
//!
//! `auth.keys` is read once and kept as a ready [`Keyring`] (parsed keys, built verifiers),
//! so a verification costs no query. It cannot go stale: a statement-level trigger on the
//! table queues a relcache invalidation for it, which PostgreSQL delivers to every backend
//! (and, through WAL, to hot standbys) when the change commits, to the writing backend at
//! its next command, and to nobody if the change rolls back. Our relcache callback then bumps
//! a generation number, and the next verification reloads. Each verification first calls
//! `AcceptInvalidationMessages()` (a flag check when nothing is queued), so another backend's
//! committed change is seen from the next statement on, even inside a long transaction.

use std::cell::{Cell, RefCell};

use pg_session_auth_core::{Algorithm, Keyring, StoredKey};
use pgrx::prelude::*;
use pgrx::{pg_sys, register_xact_callback, PgXactCallbackEvent};

use crate::spi_read;

thread_local! {
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    static WATCHED_RELATIONS: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
    static CACHE: RefCell<Option<CachedKeyring>> = const { RefCell::new(None) };
}

struct CachedKeyring {
    generation: u64,
    keyring: Keyring,
}

/// Registers the relcache callback. Called once, from `_PG_init`.
pub fn register_invalidation_callback() {
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_invalidation),
            pg_sys::Datum::from(0),
        );
    }
}

fn bump_generation() {
    GENERATION.with(|generation| generation.set(generation.get() + 1));
}

/// Relation OIDs whose changes invalidate cached state (filled as the tables are first read).
pub fn watch_relation(relid: pg_sys::Oid) {
    WATCHED_RELATIONS.with(|watched| {
        let mut watched = watched.borrow_mut();
        if !watched.contains(&relid) {
            watched.push(relid);
        }
    });
}

unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // InvalidOid means "every relation" (e.g. after the invalidation queue overflowed).
    let ours = relid == pg_sys::InvalidOid
        || WATCHED_RELATIONS.with(|watched| watched.borrow().contains(&relid));
    if ours {
        bump_generation();
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

/// Processes queued invalidations, then runs `f` with a current keyring.
pub fn with_keyring<R>(f: impl FnOnce(&Keyring) -> R) -> R {
    unsafe { pg_sys::AcceptInvalidationMessages() };
    let current = GENERATION.with(Cell::get);
    let fresh = CACHE.with(|cache| {
        cache
            .borrow()
            .as_ref()
            .is_some_and(|c| c.generation == current)
    });
    if !fresh {
        // Loading may itself process invalidations; the generation read before it is stored,
        // so anything that arrived meanwhile forces another load next time.
        let keyring = load_keyring();
        if !spi_read::snapshot_is_latest() {
            register_xact_callback(PgXactCallbackEvent::Commit, bump_generation);
            register_xact_callback(PgXactCallbackEvent::Abort, bump_generation);
        }
        CACHE.with(|cache| {
            *cache.borrow_mut() = Some(CachedKeyring {
                generation: current,
                keyring,
            })
        });
    }
    CACHE.with(|cache| {
        f(&cache
            .borrow()
            .as_ref()
            .expect("keyring cache was just filled")
            .keyring)
    })
}

/// Reads `auth.keys` into a keyring. A row that no longer parses (written by hand) is left
/// out with a WARNING, so tokens for it fail as "unknown key" rather than being trusted.
fn load_keyring() -> Keyring {
    let mut keyring = Keyring::new();
    let Some((relid, owner)) = spi_read::relation_and_owner("keys") else {
        return keyring;
    };
    watch_relation(relid);
    let rows = spi_read::select_as(
        Some(owner),
        "select kid, alg, pg_catalog.encode(secret, 'base64'), public_jwk::pg_catalog.text, \
         retired_at is not null from auth.keys",
    );
    for row in rows {
        let [Some(kid), Some(alg), secret, public_jwk, Some(retired)] =
            <[Option<String>; 5]>::try_from(row)
                .unwrap_or_else(|_| unreachable!("the query has five columns"))
        else {
            continue;
        };
        let stored = match (secret, public_jwk) {
            (Some(secret), None) => decode_base64(&secret).map(StoredKey::Secret),
            (None, Some(jwk)) => match serde_json::from_str(&jwk) {
                Ok(serde_json::Value::Object(object)) => Some(StoredKey::PublicJwk(object)),
                _ => None,
            },
            _ => None,
        };
        let outcome = match (Algorithm::from_name(&alg), stored) {
            (Some(alg), Some(stored)) => keyring
                .insert(&kid, alg, &stored, retired == "t")
                .map_err(|e| e.to_string()),
            _ => Err("the row's algorithm or key material is unreadable".to_string()),
        };
        if let Err(why) = outcome {
            pgrx::warning!("pg_session_auth: key {kid:?} in auth.keys is ignored: {why}");
        }
    }
    keyring
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    // PostgreSQL's base64 output wraps lines every 76 characters.
    let joined: String = text.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(joined)
        .ok()
}
