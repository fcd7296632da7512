//! The shared revocation filter: a token that no revocation names is cleared without a query.
//!
//! With `shared_preload_libraries = 'pg_session_auth'`, shared memory holds one Bloom filter
//! (`pg_session_auth_core::revocation_filter`) per database, of every key in its revocation
//! tables. A check probes it first; only a token with a key that may be in it is looked up
//! exactly (`revocation.rs`). Without the preload, or on a hot standby, every new token is
//! looked up.
//!
//! The filter must never miss a committed revocation. That holds because:
//! - every write to a revocation table fires a row trigger ([`note_revocation`]) that adds the
//!   new key to the filter while the writing transaction still holds its table lock, whenever
//!   the filter is `BUILDING` or `VALID`;
//! - a build ([`build`], run by a background worker that a check starts, or by
//!   `auth.rebuild_revocation_filter()`) clears the filter, marks it `BUILDING`, then adds
//!   every row it reads under a dirty snapshot ([`fill`]): committed rows and rows of writers
//!   still in progress, prepared transactions included. A writer's trigger runs after its row
//!   is in the heap, so a key added to the words before they were cleared belongs to a row the
//!   scan sees, and a key added after lands in the new filter. No build waits for writers, so
//!   none gives up, and a rebuild never leaves a valid filter invalid unless it fails;
//! - readers use a filter only while it is `VALID` for their database and for the current
//!   incarnation of the tables (their OIDs), and re-read its status after probing, so a
//!   rebuild that starts meanwhile sends them to the exact lookup (a sequence lock). A claim
//!   changes the status before it rewrites the slot's identity, so a reader that sees the new
//!   identity also sees the status change;
//! - a session whose own transaction has written to the tables does not build (its snapshot
//!   would see its own uncommitted deletions, which a rollback would bring back);
//! - readers trust the filter only while the tables' triggers are exactly as the extension
//!   created them and enabled `ALWAYS`, and only if no trigger on the tables (or their
//!   functions) has changed since it was built ([`Incarnation`]): a
//!   filter built before a trigger was disabled and enabled again may lack keys written in
//!   between. (Writing with the triggers disabled and restoring them in the same transaction
//!   also changes their catalog rows, so it is caught too.)
//!
//! Removals (purges) leave their bits set: stale bits only cost lookups. Once more keys have
//! been added than the filter holds at about 0.4% false positives (and twice as many as it held
//! after its last build), the next check has it rebuilt; `auth.rebuild_revocation_filter()`
//! does so on demand, e.g. after a scheduled purge.

use std::ffi::CStr;
use std::ptr;
use std::sync::atomic::{fence, AtomicI32, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use pg_session_auth_core::revocation_filter::{FilterKey, RevocationFilter, WORDS_PER_BLOCK};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::tables::find_tables;
use crate::errors::{raise, Failure};
use crate::gucs;
use crate::pg::compat;

/// Databases that can have a filter at the same time (a slot each).
pub const MAX_DATABASES: usize = 4;
/// At most one build worker is started per this interval, cluster-wide.
const WORKER_LAUNCH_INTERVAL_MS: i64 = 200;
/// How long after a build failed (an error, a cancel) the next one may start.
const RETRY_AFTER_MS: i64 = 1_000;

const SHMEM_NAME: &CStr = c"pg_session_auth revocation filter";
const LWLOCK_TRANCHE: &CStr = c"pg_session_auth";

/// A slot's state, in the low two bits of its status; the bits above count state changes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// No database uses the slot.
    Free = 0,
    /// Not usable; writers do not add keys.
    Invalid = 1,
    /// Being built: writers add keys, readers do not use it.
    Building = 2,
    /// Complete: writers add keys, readers use it.
    Valid = 3,
}

impl State {
    fn of(status: u64) -> State {
        match status & 3 {
            0 => State::Free,
            1 => State::Invalid,
            2 => State::Building,
            _ => State::Valid,
        }
    }

    fn name(self) -> &'static str {
        match self {
            State::Free => "free",
            State::Invalid => "invalid",
            State::Building => "building",
            State::Valid => "valid",
        }
    }
}

/// One database's filter. The status changes under the lock; everything else is atomic.
#[repr(C)]
struct Slot {
    status: AtomicU64,
    database: AtomicU32,
    /// OIDs of `revoked_sessions`, `revoked_users`, `revoked_tokens` it was built from.
    tables: [AtomicU32; 3],
    triggers_version: AtomicU64,
    builder_pid: AtomicI32,
    keys_added: AtomicU64,
    keys_at_build: AtomicU64,
    builds: AtomicU64,
    /// No build before this (microseconds since the PostgreSQL epoch).
    retry_after: AtomicI64,
}

/// Changes whenever the shared layout or the filter's hashing does; a library that finds
/// another value in shared memory (a replaced library under EXEC_BACKEND) does not use it.
const LAYOUT_VERSION: u64 = 0x5053_4146_0002_0000
    | (pg_session_auth_core::revocation_filter::BITS_PER_KEY as u64) << 8
    | WORDS_PER_BLOCK as u64;

#[repr(C)]
struct Header {
    layout: u64,
    lock: *mut pg_sys::LWLock,
    seed: [u64; 2],
    words_per_slot: usize,
    /// When the next build worker may be started.
    next_worker_launch: AtomicI64,
    slots: [Slot; MAX_DATABASES],
}

/// The shared header, followed (at a cache-line boundary) by the slots' words; null when the
/// library was not preloaded or the filter is turned off.
static SHARED: AtomicPtr<Header> = AtomicPtr::new(ptr::null_mut());

fn header_bytes() -> usize {
    std::mem::size_of::<Header>().next_multiple_of(64)
}

fn words_per_slot() -> usize {
    let bytes = gucs::REVOCATION_FILTER_SIZE.get().max(0) as usize * 1024;
    (bytes / 8).next_multiple_of(WORDS_PER_BLOCK)
}

fn shared_bytes() -> usize {
    header_bytes() + MAX_DATABASES * words_per_slot() * 8 + 64
}

static mut PREVIOUS_SHMEM_REQUEST: Option<unsafe extern "C-unwind" fn()> = None;
static mut PREVIOUS_SHMEM_STARTUP: Option<unsafe extern "C-unwind" fn()> = None;

/// Reserves the shared memory when the library is being preloaded. Called from `_PG_init`
/// after the settings are defined.
pub fn request_shared_memory() {
    unsafe {
        if !pg_sys::process_shared_preload_libraries_in_progress || words_per_slot() == 0 {
            return;
        }
        compat::request_shared_memory(on_shmem_request, &raw mut PREVIOUS_SHMEM_REQUEST);
        PREVIOUS_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(on_shmem_startup);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_request() {
    if let Some(previous) = PREVIOUS_SHMEM_REQUEST {
        previous();
    }
    pg_sys::RequestAddinShmemSpace(shared_bytes());
    pg_sys::RequestNamedLWLockTranche(LWLOCK_TRANCHE.as_ptr(), 1);
}

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_startup() {
    if let Some(previous) = PREVIOUS_SHMEM_STARTUP {
        previous();
    }
    // AddinShmemInitLock.
    let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
    pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
    let mut found = false;
    let base = pg_sys::ShmemInitStruct(SHMEM_NAME.as_ptr(), shared_bytes(), &mut found) as *mut u8;
    // Start the header on a cache line.
    let header = base.add(base.align_offset(64)) as *mut Header;
    if !found {
        ptr::write_bytes(base, 0, shared_bytes());
        let mut seed = [0u64; 2];
        if !pg_sys::pg_strong_random(seed.as_mut_ptr().cast(), std::mem::size_of_val(&seed)) {
            seed = [
                pg_sys::MyProcPid as u64,
                pg_sys::GetCurrentTimestamp() as u64,
            ];
        }
        (*header).layout = LAYOUT_VERSION;
        (*header).seed = seed;
        (*header).words_per_slot = words_per_slot();
        (*header).lock = &raw mut (*pg_sys::GetNamedLWLockTranche(LWLOCK_TRANCHE.as_ptr())).lock;
    }
    SHARED.store(header, Ordering::Release);
    pg_sys::LWLockRelease(init_lock);
}

fn shared() -> Option<&'static Header> {
    unsafe { SHARED.load(Ordering::Acquire).as_ref() }.filter(|h| h.layout == LAYOUT_VERSION)
}

impl Header {
    fn filter(&self, slot: usize) -> RevocationFilter<'_> {
        let words = unsafe {
            let first =
                (self as *const Header as *const u8).add(header_bytes()) as *const AtomicU64;
            std::slice::from_raw_parts(first.add(slot * self.words_per_slot), self.words_per_slot)
        };
        RevocationFilter::new(words, self.seed)
    }

    fn slot_of(&self, database: pg_sys::Oid) -> Option<usize> {
        self.slots.iter().position(|slot| {
            State::of(slot.status.load(Ordering::Acquire)) != State::Free
                && slot.database.load(Ordering::Relaxed) == database.to_u32()
        })
    }

    fn locked<R>(&self, body: impl FnOnce() -> R) -> R {
        unsafe { pg_sys::LWLockAcquire(self.lock, pg_sys::LWLockMode::LW_EXCLUSIVE) };
        let result = body();
        unsafe { pg_sys::LWLockRelease(self.lock) };
        result
    }
}

impl Slot {
    /// Moves to `state`, counting the change; under the lock.
    fn set_state(&self, state: State) -> u64 {
        let status = ((self.status.load(Ordering::Relaxed) >> 2) + 1) << 2 | state as u64;
        self.status.store(status, Ordering::Release);
        status
    }

    fn built_from(&self, incarnation: &Incarnation) -> bool {
        self.triggers_version.load(Ordering::Relaxed) == incarnation.triggers_version
            && self
                .tables
                .iter()
                .zip(&incarnation.tables)
                .all(|(stored, table)| stored.load(Ordering::Relaxed) == table.to_u32())
    }

    /// The status under which another database may claim the slot — it is free, or its
    /// database has been dropped (reads the catalog) — or `None`. A claim confirms it under
    /// the lock by finding the status unchanged.
    fn claimable_by_another_database(&self) -> Option<u64> {
        let status = self.status.load(Ordering::Acquire);
        let database = self.database.load(Ordering::Relaxed);
        let dropped = || unsafe {
            !pg_sys::SearchSysCacheExists(
                pg_sys::SysCacheIdentifier::DATABASEOID as i32,
                pg_sys::Datum::from(database),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
            )
        };
        (State::of(status) == State::Free || dropped()).then_some(status)
    }

    fn wants_rebuild(&self, capacity: u64) -> bool {
        let added = self.keys_added.load(Ordering::Relaxed);
        added > capacity.max(2 * self.keys_at_build.load(Ordering::Relaxed))
    }
}

/// Which revocation tables a filter was built from: their OIDs (a dropped and re-created
/// extension has new ones) and the version of their triggers (a filter built before a trigger
/// was disabled may lack keys written while it was).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Incarnation {
    pub tables: [pg_sys::Oid; 3],
    pub triggers_version: u64,
}

thread_local! {
    /// When this backend, whose database has no slot, may next look for one.
    static NEXT_SLOT_SEARCH: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
    /// When this backend may next log that no worker could be started.
    static NEXT_NO_WORKER_LOG: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// What the filter says about a token's keys.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Screening {
    /// None of the keys is revoked.
    Clear,
    /// A key may be revoked, or the filter cannot be used: look the keys up.
    LookUp,
}

/// Screens `keys` against this database's filter for `incarnation` of the tables. When the
/// filter is missing, stale or too full, asks a background worker to build it and answers
/// [`Screening::LookUp`] meanwhile.
pub fn screen<'k>(
    incarnation: &Incarnation,
    mut keys: impl Iterator<Item = FilterKey<'k>>,
) -> Screening {
    let Some(header) = shared() else {
        return Screening::LookUp;
    };
    if unsafe { pg_sys::RecoveryInProgress() } {
        // Nothing maintains a filter from replayed WAL.
        return Screening::LookUp;
    }
    let database = unsafe { pg_sys::MyDatabaseId };
    let usable = |slot: &Slot| {
        let status = slot.status.load(Ordering::Acquire);
        (State::of(status) == State::Valid && slot.built_from(incarnation)).then_some(status)
    };
    let found = header.slot_of(database);
    let valid = found.and_then(|i| usable(&header.slots[i]));
    let needs_build = match found {
        // A slot may be free, or one of a dropped database reusable (looked for once a
        // second, under the lock, by `build`).
        None => {
            let now = unsafe { pg_sys::GetCurrentTimestamp() };
            let due = !is_future(NEXT_SLOT_SEARCH.get(), now, RETRY_AFTER_MS);
            if due {
                NEXT_SLOT_SEARCH.set(now + RETRY_AFTER_MS * 1000);
            }
            due && header
                .slots
                .iter()
                .any(|slot| slot.claimable_by_another_database().is_some())
        }
        Some(i) => {
            let slot = &header.slots[i];
            (valid.is_none() || slot.wants_rebuild(header.filter(i).capacity()))
                && match State::of(slot.status.load(Ordering::Relaxed)) {
                    State::Building => !builder_is_alive(slot.builder_pid.load(Ordering::Relaxed)),
                    _ => !is_future(
                        slot.retry_after.load(Ordering::Relaxed),
                        unsafe { pg_sys::GetCurrentTimestamp() },
                        RETRY_AFTER_MS,
                    ),
                }
        }
    };
    if needs_build {
        // Built by a background worker: no request waits for a build or fails with it.
        request_build(header, database);
    }
    let (Some(i), Some(status)) = (found, valid) else {
        return Screening::LookUp;
    };
    let slot = &header.slots[i];
    let filter = header.filter(i);
    let may_contain = keys.any(|key| filter.may_contain(key));
    // Sequence lock: if a rebuild started while we probed, our reads may have seen cleared words.
    fence(Ordering::Acquire);
    if may_contain || slot.status.load(Ordering::Relaxed) != status {
        return Screening::LookUp;
    }
    Screening::Clear
}

/// Starts a background worker that builds this database's filter, unless one was started
/// very recently (it then gets its turn at a later check). Without a free worker slot the
/// checks simply go on looking tokens up.
fn request_build(header: &Header, database: pg_sys::Oid) {
    if unsafe { pg_sys::ParallelWorkerNumber } >= 0 {
        return; // The leader asks.
    }
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let next = header.next_worker_launch.load(Ordering::Relaxed);
    if is_future(next, now, WORKER_LAUNCH_INTERVAL_MS)
        || header
            .next_worker_launch
            .compare_exchange(
                next,
                now + WORKER_LAUNCH_INTERVAL_MS * 1000,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
    {
        return;
    }
    let started = BackgroundWorkerBuilder::new("pg_session_auth revocation filter builder")
        .set_type("pg_session_auth filter builder")
        .set_library("pg_session_auth")
        .set_function("pg_session_auth_build_revocation_filter")
        .set_argument(Some(pg_sys::Datum::from(database.to_u32())))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .load_dynamic();
    if started.is_err() && !is_future(NEXT_NO_WORKER_LOG.get(), now, 60_000) {
        NEXT_NO_WORKER_LOG.set(now + 60_000_000);
        log!(
            "pg_session_auth: no background worker slot free to build the revocation filter; \
             revocations are looked up meanwhile (raise max_worker_processes)"
        );
    }
}

/// Whether `moment` is still ahead of `now`; a moment more than `interval_ms` ahead is from
/// before the clock was set back, and has passed.
fn is_future(moment: i64, now: i64, interval_ms: i64) -> bool {
    moment > now && moment <= now + interval_ms * 1000
}

extern "C-unwind" {
    /// PostgreSQL's own SIGTERM handler for backends (`die`), as a plain C function pointer.
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

/// The build worker's entry point: connects to the database and builds its filter.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_session_auth_build_revocation_filter(argument: pg_sys::Datum) {
    let database = pg_sys::Oid::from(argument.value() as u32);
    unsafe {
        // As a backend does: SIGTERM (e.g. a fast shutdown) ends the build at its next
        // interrupt check; a slot it was building is then taken over by a later build.
        compat::set_signal_handler(pg_sys::SIGTERM as i32, Some(postgres_die));
        pg_sys::BackgroundWorkerUnblockSignals();
        // Whatever the database's and role's defaults: a plain read-committed transaction
        // whose snapshot never waits, and no client time limits.
        for (name, value) in [
            (c"default_transaction_isolation", c"read committed"),
            (c"default_transaction_deferrable", c"off"),
            (c"statement_timeout", c"0"),
            (c"lock_timeout", c"0"),
        ] {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_OVERRIDE,
            );
        }
    }
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), None);
    BackgroundWorker::transaction(|| {
        build_here(false);
    });
}

/// Adds a key written to a revocation table of this database (from the row trigger).
fn add(key: FilterKey<'_>) {
    let Some(header) = shared() else {
        return;
    };
    let Some(i) = header.slot_of(unsafe { pg_sys::MyDatabaseId }) else {
        return;
    };
    let slot = &header.slots[i];
    if matches!(
        State::of(slot.status.load(Ordering::Acquire)),
        State::Building | State::Valid
    ) {
        header.filter(i).insert(key);
        slot.keys_added.fetch_add(1, Ordering::Relaxed);
    }
}

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

/// Whether this session may build: not in a parallel operation (which may not take a fresh
/// snapshot), and not after its own transaction has written to the tables.
fn may_build_here(tables: &[pg_sys::Oid; 3]) -> bool {
    unsafe {
        if pg_sys::IsInParallelMode() {
            return false;
        }
        const WRITE_MODES: [u32; 4] = [
            pg_sys::RowExclusiveLock,
            pg_sys::ShareRowExclusiveLock,
            pg_sys::ExclusiveLock,
            pg_sys::AccessExclusiveLock,
        ];
        !tables.iter().any(|table| {
            let tag = relation_lock_tag(*table);
            WRITE_MODES
                .iter()
                .any(|mode| compat::lock_held_by_me(&tag, *mode as pg_sys::LOCKMODE))
        })
    }
}

fn relation_lock_tag(relation: pg_sys::Oid) -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: relation.to_u32(),
        locktag_field3: 0,
        locktag_field4: 0,
        locktag_type: pg_sys::LockTagType::LOCKTAG_RELATION as u8,
        locktag_lockmethodid: pg_sys::DEFAULT_LOCKMETHOD as u8,
    }
}

/// Clears and refills this database's filter from the tables. With `force`, also when it is
/// valid. See the module documentation for why no committed key can be missed.
fn build(header: &Header, incarnation: &Incarnation, force: bool) -> BuildOutcome {
    let tables = &incarnation.tables;
    if !may_build_here(tables) {
        return BuildOutcome::NotHere;
    }
    let database = unsafe { pg_sys::MyDatabaseId };
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let me = unsafe { pg_sys::MyProcPid };
    // Slots of dropped databases may be reused; found out before taking the lock (catalog
    // access under an LWLock is not allowed), confirmed under it by an unchanged status.
    let abandoned: Vec<(usize, u64)> = header
        .slots
        .iter()
        .enumerate()
        .filter_map(|(i, slot)| Some((i, slot.claimable_by_another_database()?)))
        .filter(|(_, status)| State::of(*status) != State::Free)
        .collect();
    // Claim the slot: Invalid, so writers stop adding to words about to be cleared.
    let claimed = header.locked(|| {
        let i = header
            .slot_of(database)
            .or_else(|| {
                header.slots.iter().enumerate().position(|(i, slot)| {
                    let status = slot.status.load(Ordering::Relaxed);
                    State::of(status) == State::Free || abandoned.contains(&(i, status))
                })
            })
            .ok_or(BuildOutcome::NoSlot)?;
        let slot = &header.slots[i];
        let state = State::of(slot.status.load(Ordering::Relaxed));
        if builder_is_alive(slot.builder_pid.load(Ordering::Relaxed)) {
            return Err(BuildOutcome::NotNow); // Another build is under way.
        }
        if state == State::Valid
            && slot.built_from(incarnation)
            && !force
            && !slot.wants_rebuild(header.filter(i).capacity())
        {
            return Err(BuildOutcome::NotNow); // Built meanwhile by someone else.
        }
        let same_database = slot.database.load(Ordering::Relaxed) == database.to_u32();
        if !force && same_database && slot.retry_after.load(Ordering::Relaxed) > now {
            return Err(BuildOutcome::NotNow);
        }
        // The state first: a reader that sees the new identity below must also see that the
        // slot is no longer valid when it re-reads the status (the sequence lock in `screen`).
        slot.set_state(State::Invalid);
        fence(Ordering::Release);
        slot.database.store(database.to_u32(), Ordering::Relaxed);
        for (stored, table) in slot.tables.iter().zip(&incarnation.tables) {
            stored.store(table.to_u32(), Ordering::Relaxed);
        }
        slot.triggers_version
            .store(incarnation.triggers_version, Ordering::Relaxed);
        slot.builder_pid.store(me, Ordering::Relaxed);
        // Cleared under the lock, so no other claim can interleave with it. Writers skip the
        // slot while it is Invalid; from Building on their triggers add their keys (the
        // status store releases the cleared words).
        header.filter(i).clear();
        slot.keys_added.store(0, Ordering::Relaxed);
        Ok((i, slot.set_state(State::Building)))
    });
    let (i, building) = match claimed {
        Ok(claim) => claim,
        Err(outcome) => return outcome,
    };
    let slot = &header.slots[i];
    let filter = header.filter(i);

    let give_up = || {
        header.locked(|| {
            if slot.status.load(Ordering::Relaxed) == building {
                slot.set_state(State::Invalid);
                slot.builder_pid.store(0, Ordering::Relaxed);
                let later = unsafe { pg_sys::GetCurrentTimestamp() } + RETRY_AFTER_MS * 1000;
                slot.retry_after.store(later, Ordering::Relaxed);
            }
        })
    };
    // On any error (a cancel, a statement timeout while reading), leave the slot to the next
    // build instead of "being built" by a session that has moved on.
    let filled = PgTryBuilder::new(|| fill(&filter, tables))
        .catch_others(|error| {
            give_up();
            error.rethrow()
        })
        .execute();
    header.locked(|| {
        if slot.status.load(Ordering::Relaxed) != building {
            return BuildOutcome::NotNow; // Taken over by a later build.
        }
        slot.keys_added.fetch_add(filled, Ordering::Relaxed);
        slot.keys_at_build
            .store(slot.keys_added.load(Ordering::Relaxed), Ordering::Relaxed);
        slot.builds.fetch_add(1, Ordering::Relaxed);
        slot.builder_pid.store(0, Ordering::Relaxed);
        slot.set_state(State::Valid);
        BuildOutcome::Built
    })
}

fn builder_is_alive(pid: i32) -> bool {
    pid != 0 && unsafe { !pg_sys::BackendPidGetProc(pid).is_null() }
}

/// Adds every key in the tables; returns how many.
///
/// Read under a dirty snapshot: besides committed rows it sees rows whose writer is still in
/// progress — an open transaction, or a prepared one (`PREPARE TRANSACTION`) that may commit
/// at any later time — so no build has to wait for writers. A writer's row is in the heap
/// before its row trigger runs: a key whose trigger added it to the words this build cleared
/// belongs to a row that was already there when this scan began. Rows of writers that roll
/// back only cost false positives. A row deleted by a committed transaction is not seen.
fn fill(filter: &RevocationFilter<'_>, tables: &[pg_sys::Oid; 3]) -> u64 {
    let [sessions, users, tokens] = *tables;
    let mut keys = 0u64;
    scan_key_column(sessions, c"session_id", |datum| {
        // SAFETY: a uuid datum points at its 16 bytes, alive while the scan is on the tuple.
        let bytes = unsafe { &*(datum.cast_mut_ptr::<[u8; 16]>()) };
        filter.insert(FilterKey::Session(bytes));
        keys += 1;
    });
    scan_key_column(users, c"user_id", |datum| {
        // SAFETY: a text datum of the tuple being read (detoasted by from_datum).
        let user = unsafe { <&str>::from_datum(datum, false) }.unwrap_or_default();
        filter.insert(FilterKey::User(user));
        keys += 1;
    });
    scan_key_column(tokens, c"jti", |datum| {
        // SAFETY: as above.
        let jti = unsafe { <&str>::from_datum(datum, false) }.unwrap_or_default();
        filter.insert(FilterKey::Token(jti));
        keys += 1;
    });
    keys
}

/// Hands the non-NULL values of one column of every row a dirty snapshot sees to `each`
/// (a sequential scan of the heap; no SQL, no permission checks: the tables are the
/// extension's own).
fn scan_key_column(relation: pg_sys::Oid, column: &CStr, mut each: impl FnMut(pg_sys::Datum)) {
    unsafe {
        let rel = pg_sys::table_open(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let attnum = pg_sys::get_attnum(relation, column.as_ptr());
        if attnum <= 0 {
            pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            return;
        }
        let mut dirty: pg_sys::SnapshotData = std::mem::zeroed();
        dirty.snapshot_type = pg_sys::SnapshotType::SNAPSHOT_DIRTY;
        let scan = pg_sys::table_beginscan(rel, &mut dirty, 0, ptr::null_mut());
        let tupdesc = (*rel).rd_att;
        let natts = (*tupdesc).natts as usize;
        let mut values = vec![pg_sys::Datum::from(0); natts];
        let mut nulls = vec![true; natts];
        let index = attnum as usize - 1;
        loop {
            pgrx::check_for_interrupts!();
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            pg_sys::heap_deform_tuple(tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            if !nulls[index] {
                each(values[index]);
            }
        }
        pg_sys::heap_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    }
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
    let incarnation = &incarnation;
    match shared() {
        Some(header) if unsafe { !pg_sys::RecoveryInProgress() } => {
            build(header, incarnation, force)
        }
        _ => BuildOutcome::Unavailable,
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
    let Some(header) = shared() else {
        return unavailable("unavailable");
    };
    if unsafe { pg_sys::RecoveryInProgress() } {
        return unavailable("unavailable");
    }
    let Some(i) = header.slot_of(unsafe { pg_sys::MyDatabaseId }) else {
        return unavailable("free");
    };
    let slot = &header.slots[i];
    Status {
        state: State::of(slot.status.load(Ordering::Acquire)).name(),
        keys: slot.keys_added.load(Ordering::Relaxed) as i64,
        capacity: header.filter(i).capacity() as i64,
        bytes: (header.words_per_slot * 8) as i64,
        builds: slot.builds.load(Ordering::Relaxed) as i64,
    }
}

/// Row trigger on the revocation tables: adds the written key to the filter. Its argument
/// names the table's kind: `session`, `user` or `token`.
#[pg_trigger]
fn note_revocation<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let Some(row) = trigger.new() else {
        return Ok(None);
    };
    let kind = trigger.extra_args()?.into_iter().next().unwrap_or_default();
    let unreadable = |error: pgrx::datum::TryFromDatumError| -> ! {
        raise(Failure::ObjectsAltered {
            what: format!("note_revocation cannot read the revoked key: {error}"),
        })
    };
    match kind.as_str() {
        "session" => {
            let id = row.get_by_name::<pgrx::Uuid>("session_id");
            if let Some(id) = id.unwrap_or_else(|e| unreadable(e)) {
                add(FilterKey::Session(id.as_bytes()));
            }
        }
        "user" => {
            let user = row.get_by_name::<&str>("user_id");
            if let Some(user) = user.unwrap_or_else(|e| unreadable(e)) {
                add(FilterKey::User(user));
            }
        }
        "token" => {
            let jti = row.get_by_name::<&str>("jti");
            if let Some(jti) = jti.unwrap_or_else(|e| unreadable(e)) {
                add(FilterKey::Token(jti));
            }
        }
        other => raise(Failure::ObjectsAltered {
            what: format!("note_revocation does not know the kind {other:?}"),
        }),
    }
    Ok(None)
}
