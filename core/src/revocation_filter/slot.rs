//! The slots of the shared revocation filter: whose filter a slot holds, whether readers may
//! use it, and who may rebuild it when — a state machine over atomics that many processes
//! (in tests: threads) share.
//!
//! A slot holds one database's filter. The extension keeps its slots and their words in
//! shared memory and serialises every change of state under one lock (an LWLock); here the
//! slots are any `&[Slot]` and the lock anything that implements [`SlotLock`]. Everything
//! that needs the server — which process is alive, which database was dropped, what the
//! clock says, reading the tables — the caller passes in.
//!
//! States, in the low two bits of a slot's status word (the bits above count changes):
//! - `Free`: no database uses the slot (all-zero memory is a free slot);
//! - `Invalid`: not usable; writers do not add keys;
//! - `Building`: being built: writers add keys, readers do not use it;
//! - `Valid`: complete: writers add keys, readers use it.
//!
//! The filter must never miss a key that was written before a reader began. That holds
//! because:
//! - writers ([`Slots::add`]) write their row first and then add its key whenever the slot is
//!   `Building` or `Valid` — a key added to words about to be cleared belongs to a row that
//!   the build's scan sees, and a key added after the clear lands in the new filter;
//! - a build claims the slot ([`Slots::claim`]) under the lock: `Invalid` first, so writers
//!   stop adding to words about to be cleared; then the slot's new identity (database, tables,
//!   triggers) and its builder; then the words are cleared, still under the lock so no other
//!   claim interleaves; then `Building`, whose store releases the cleared words. Only after
//!   that does the builder read the tables and add every key ([`Slots::finish`] then marks it
//!   `Valid`, unless a later build took the slot over meanwhile);
//! - readers use a filter only while it is `Valid` for their database and for the current
//!   incarnation of the tables ([`Incarnation`]), and re-read its status after probing, so a
//!   rebuild that starts meanwhile sends them to the exact lookup (a sequence lock:
//!   [`Slots::begin_read`], [`Slots::screen`]). A claim changes the status before it rewrites
//!   the slot's identity, so a reader that sees the new identity also sees the status change
//!   when it re-reads it.
//!
//! Who may build when ([`Slots::claim`], [`Slots::needs_build`]):
//! - one builder at a time: a slot whose builder is still alive is not claimed; a slot whose
//!   builder died (a crash, a `SIGTERM`) is taken over, and the dead builder's
//!   [`Slots::finish`] would find the status changed and leave it alone;
//! - a slot that is `Valid` for the claimant's incarnation is rebuilt only when forced, or
//!   once more keys have been added than it holds at about 0.4% false positives (and twice as
//!   many as it held after its last build: a filter too small for the live revocations is not
//!   rebuilt over and over);
//! - after a build failed ([`Slots::give_up`]), the next unforced one waits
//!   [`RETRY_AFTER_MS`];
//! - a database that has no slot takes a free one, or one of a dropped database: the caller
//!   finds those before taking the lock ([`Slots::abandoned`], catalog access under an
//!   LWLock is not allowed), and the claim confirms each under the lock by finding its status
//!   unchanged.

use std::sync::atomic::{fence, AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering};

use super::{FilterKey, RevocationFilter, WORDS_PER_BLOCK};

/// How long after a build failed (an error, a cancel) the next one may start.
pub const RETRY_AFTER_MS: i64 = 1_000;

/// A slot's state, in the low two bits of its status; the bits above count state changes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
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

    /// As `auth.revocation_filter()` shows it.
    pub fn name(self) -> &'static str {
        match self {
            State::Free => "free",
            State::Invalid => "invalid",
            State::Building => "building",
            State::Valid => "valid",
        }
    }
}

/// A slot's status word as seen at one moment: its state and how many changes preceded it.
/// Equal statuses mean no change happened in between.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Status(u64);

impl Status {
    fn state(self) -> State {
        State::of(self.0)
    }
}

/// Which revocation tables a filter was built from: their OIDs (a dropped and re-created
/// extension has new ones) and the version of their triggers (a filter built before a trigger
/// was disabled may lack keys written while it was).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Incarnation {
    /// `revoked_sessions`, `revoked_users`, `revoked_tokens`.
    pub tables: [u32; 3],
    pub triggers_version: u64,
}

/// One database's filter. The status changes under the lock; everything else is atomic.
///
/// `#[repr(C)]` and made of atomics only: it lives in shared memory, where all-zero bytes are
/// a free slot. Its size is part of the extension's shared layout (a test pins it).
#[repr(C)]
#[derive(Default, Debug)]
pub struct Slot {
    status: AtomicU64,
    database: AtomicU32,
    /// OIDs of `revoked_sessions`, `revoked_users`, `revoked_tokens` it was built from.
    tables: [AtomicU32; 3],
    triggers_version: AtomicU64,
    /// Who builds it (a process id), 0 for nobody.
    builder: AtomicI32,
    keys_added: AtomicU64,
    keys_at_build: AtomicU64,
    builds: AtomicU64,
    /// No unforced build before this (microseconds since the PostgreSQL epoch).
    retry_after: AtomicI64,
}

impl Slot {
    fn status(&self) -> Status {
        Status(self.status.load(Ordering::Acquire))
    }

    /// The slot's state now.
    pub fn state(&self) -> State {
        self.status().state()
    }

    /// Keys its last build read plus those added since (purged ones included).
    pub fn keys(&self) -> u64 {
        self.keys_added.load(Ordering::Relaxed)
    }

    /// How many builds completed.
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    /// Moves to `state`, counting the change; under the lock.
    fn set_state(&self, state: State) -> Status {
        let status = ((self.status.load(Ordering::Relaxed) >> 2) + 1) << 2 | state as u64;
        self.status.store(status, Ordering::Release);
        Status(status)
    }

    fn built_from(&self, incarnation: &Incarnation) -> bool {
        self.triggers_version.load(Ordering::Relaxed) == incarnation.triggers_version
            && self
                .tables
                .iter()
                .zip(&incarnation.tables)
                .all(|(stored, table)| stored.load(Ordering::Relaxed) == *table)
    }

    fn wants_rebuild(&self, capacity: u64) -> bool {
        let added = self.keys_added.load(Ordering::Relaxed);
        added > capacity.max(2 * self.keys_at_build.load(Ordering::Relaxed))
    }

    /// Whether a builder is recorded and `alive` says it still runs.
    fn builder_alive(&self, alive: impl FnOnce(i32) -> bool) -> bool {
        let builder = self.builder.load(Ordering::Relaxed);
        builder != 0 && alive(builder)
    }

    /// The status under which another database may claim the slot — it is free, or its
    /// database has been dropped (`dropped` is asked, e.g. the catalog) — or `None`. A claim
    /// confirms it under the lock by finding the status unchanged.
    fn claimable_by_another_database(&self, dropped: impl FnOnce(u32) -> bool) -> Option<Status> {
        let status = self.status();
        let database = self.database.load(Ordering::Relaxed);
        (status.state() == State::Free || dropped(database)).then_some(status)
    }
}

/// The lock under which slots change state. The extension's is an LWLock in shared memory.
pub trait SlotLock {
    /// Runs `body` holding the lock exclusively.
    fn exclusive<R>(&self, body: impl FnOnce() -> R) -> R;
}

/// What the filter says about a token's keys.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Screening {
    /// None of the keys is revoked.
    Clear,
    /// A key may be revoked, or the filter cannot be used: look the keys up.
    LookUp,
}

/// A read begun on a `Valid` slot ([`Slots::begin_read`]), to be finished by
/// [`Slots::screen`].
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    slot: usize,
    status: Status,
}

/// A slot of a dropped database (or a free one) as seen before the lock was taken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Abandoned {
    slot: usize,
    status: Status,
}

/// Who wants to build, for what.
#[derive(Clone, Copy, Debug)]
pub struct Claimant<'i> {
    pub database: u32,
    pub incarnation: &'i Incarnation,
    /// Its process id (not 0): recorded as the slot's builder.
    pub builder: i32,
    /// Now, microseconds since the PostgreSQL epoch.
    pub now: i64,
    /// Also when the filter is valid, and without waiting after a failed build.
    pub force: bool,
}

/// Why a claim was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// Another builder is under way, it was built meanwhile, or a build failed recently.
    NotNow,
    /// All slots are taken by other databases.
    NoSlot,
}

/// A slot claimed for building: cleared and `Building`, this builder's until
/// [`Slots::finish`] or [`Slots::give_up`] — or until a later claim takes it over.
#[derive(Debug)]
pub struct Claim {
    slot: usize,
    building: Status,
}

impl Claim {
    /// The claimed slot, whose filter ([`Slots::filter`]) the builder fills.
    pub fn slot(&self) -> usize {
        self.slot
    }
}

/// The slots, the words of their filters, and the lock under which they change state.
pub struct Slots<'a, L> {
    slots: &'a [Slot],
    words: &'a [AtomicU64],
    words_per_slot: usize,
    seed: [u64; 2],
    lock: &'a L,
}

impl<'a, L: SlotLock> Slots<'a, L> {
    /// Slot `i`'s filter is `words[i * words_per_slot..][..words_per_slot]` (a non-zero
    /// multiple of [`WORDS_PER_BLOCK`]), hashing with `seed`.
    pub fn new(
        slots: &'a [Slot],
        words: &'a [AtomicU64],
        words_per_slot: usize,
        seed: [u64; 2],
        lock: &'a L,
    ) -> Self {
        assert!(
            !slots.is_empty()
                && words_per_slot > 0
                && words_per_slot.is_multiple_of(WORDS_PER_BLOCK)
                && words.len() / words_per_slot >= slots.len(),
            "every slot needs its whole filter"
        );
        Slots {
            slots,
            words,
            words_per_slot,
            seed,
            lock,
        }
    }

    pub fn slot(&self, i: usize) -> &'a Slot {
        &self.slots[i]
    }

    /// Slot `i`'s filter.
    pub fn filter(&self, i: usize) -> RevocationFilter<'a> {
        let start = i * self.words_per_slot;
        RevocationFilter::new(&self.words[start..start + self.words_per_slot], self.seed)
    }

    /// How many keys a slot's filter holds at about 0.4% false positives.
    pub fn capacity(&self) -> u64 {
        self.filter(0).capacity()
    }

    /// The slot of `database`, if it has one.
    pub fn slot_of(&self, database: u32) -> Option<usize> {
        self.slots.iter().position(|slot| {
            slot.state() != State::Free && slot.database.load(Ordering::Relaxed) == database
        })
    }

    /// Begins a read of slot `i`: only when it is `Valid` for `database` and `incarnation`.
    pub fn begin_read(
        &self,
        i: usize,
        database: u32,
        incarnation: &Incarnation,
    ) -> Option<Reading> {
        let slot = &self.slots[i];
        let status = slot.status();
        (status.state() == State::Valid
            && slot.database.load(Ordering::Relaxed) == database
            && slot.built_from(incarnation))
        .then_some(Reading { slot: i, status })
    }

    /// Probes the filter of `reading` for `keys`: [`Screening::Clear`] only when none may be
    /// in it and the slot's status is still the one the read began with.
    pub fn screen<'k>(
        &self,
        reading: Reading,
        mut keys: impl Iterator<Item = FilterKey<'k>>,
    ) -> Screening {
        let filter = self.filter(reading.slot);
        let may_contain = keys.any(|key| filter.may_contain(key));
        // Sequence lock: if a rebuild started while we probed, our reads may have seen
        // cleared words (or the identity of another build).
        fence(Ordering::Acquire);
        between_steps();
        if may_contain
            || self.slots[reading.slot].status.load(Ordering::Relaxed) != reading.status.0
        {
            return Screening::LookUp;
        }
        Screening::Clear
    }

    /// Whether a check that found slot `i` of its database (`usable`: it began a read there)
    /// should ask for a build: the filter is not usable or too full, and no build is under
    /// way (a live builder), nor did one fail within [`RETRY_AFTER_MS`]. `now` is only read
    /// when needed.
    pub fn needs_build(
        &self,
        i: usize,
        usable: bool,
        alive: impl FnOnce(i32) -> bool,
        now: impl FnOnce() -> i64,
    ) -> bool {
        let slot = &self.slots[i];
        (!usable || slot.wants_rebuild(self.capacity()))
            && match State::of(slot.status.load(Ordering::Relaxed)) {
                State::Building => !slot.builder_alive(alive),
                _ => !is_future(
                    slot.retry_after.load(Ordering::Relaxed),
                    now(),
                    RETRY_AFTER_MS,
                ),
            }
    }

    /// Whether a database without a slot could claim one: one is free, or belongs to a
    /// database that `dropped` says is gone.
    pub fn any_claimable(&self, dropped: impl Fn(u32) -> bool) -> bool {
        self.slots
            .iter()
            .any(|slot| slot.claimable_by_another_database(&dropped).is_some())
    }

    /// The slots of databases that `dropped` says are gone, as seen now; call before
    /// [`Self::claim`], outside the lock.
    pub fn abandoned(&self, dropped: impl Fn(u32) -> bool) -> Vec<Abandoned> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| {
                let status = s.claimable_by_another_database(&dropped)?;
                Some(Abandoned { slot, status })
            })
            .filter(|abandoned| abandoned.status.state() != State::Free)
            .collect()
    }

    /// Adds a key written to a revocation table of `database` (from the row trigger, after
    /// the row is in the table), while its slot is `Building` or `Valid`.
    pub fn add(&self, database: u32, key: FilterKey<'_>) {
        let Some(i) = self.slot_of(database) else {
            return;
        };
        let slot = &self.slots[i];
        if matches!(slot.state(), State::Building | State::Valid) {
            self.filter(i).insert(key);
            slot.keys_added.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Claims the slot of `claimant.database` for a build — or a free one, or one of
    /// `abandoned` still as it was seen — clears it and marks it `Building`. `alive` says
    /// whether a recorded builder still runs (asked under the lock).
    pub fn claim(
        &self,
        claimant: &Claimant<'_>,
        abandoned: &[Abandoned],
        alive: impl FnOnce(i32) -> bool,
    ) -> Result<Claim, Refusal> {
        let database = claimant.database;
        self.lock.exclusive(|| {
            let i = self
                .slot_of(database)
                .or_else(|| {
                    self.slots.iter().enumerate().position(|(i, slot)| {
                        let status = Status(slot.status.load(Ordering::Relaxed));
                        status.state() == State::Free
                            || abandoned.contains(&Abandoned { slot: i, status })
                    })
                })
                .ok_or(Refusal::NoSlot)?;
            let slot = &self.slots[i];
            let state = State::of(slot.status.load(Ordering::Relaxed));
            if slot.builder_alive(alive) {
                return Err(Refusal::NotNow); // Another build is under way.
            }
            let same_database = slot.database.load(Ordering::Relaxed) == database;
            // (A database copied from a template has the same table OIDs and trigger
            // versions: only this database's own valid filter counts.)
            if state == State::Valid
                && same_database
                && slot.built_from(claimant.incarnation)
                && !claimant.force
                && !slot.wants_rebuild(self.capacity())
            {
                return Err(Refusal::NotNow); // Built meanwhile by someone else.
            }
            if !claimant.force
                && same_database
                && slot.retry_after.load(Ordering::Relaxed) > claimant.now
            {
                return Err(Refusal::NotNow);
            }
            // The state first: a reader that sees the new identity below must also see that
            // the slot is no longer valid when it re-reads the status (`screen`).
            slot.set_state(State::Invalid);
            fence(Ordering::Release);
            between_steps();
            slot.database.store(database, Ordering::Relaxed);
            for (stored, table) in slot.tables.iter().zip(&claimant.incarnation.tables) {
                stored.store(*table, Ordering::Relaxed);
            }
            slot.triggers_version
                .store(claimant.incarnation.triggers_version, Ordering::Relaxed);
            slot.builder.store(claimant.builder, Ordering::Relaxed);
            between_steps();
            // Cleared under the lock, so no other claim can interleave with it. Writers skip
            // the slot while it is Invalid; from Building on they add their keys (the status
            // store releases the cleared words).
            self.filter(i).clear();
            slot.keys_added.store(0, Ordering::Relaxed);
            between_steps();
            let building = slot.set_state(State::Building);
            Ok(Claim { slot: i, building })
        })
    }

    /// Ends a build that failed (an error, a cancel): unless a later build took the slot
    /// over, it becomes `Invalid` and no unforced build starts before [`RETRY_AFTER_MS`]
    /// after `now`.
    pub fn give_up(&self, claim: &Claim, now: i64) {
        self.lock.exclusive(|| {
            let slot = &self.slots[claim.slot];
            if slot.status.load(Ordering::Relaxed) == claim.building.0 {
                slot.set_state(State::Invalid);
                slot.builder.store(0, Ordering::Relaxed);
                slot.retry_after
                    .store(now + RETRY_AFTER_MS * 1000, Ordering::Relaxed);
            }
        })
    }

    /// Ends a build that added `filled` keys: the slot becomes `Valid`. False when a later
    /// build took the slot over meanwhile (it is then left alone).
    pub fn finish(&self, claim: Claim, filled: u64) -> bool {
        self.lock.exclusive(|| {
            let slot = &self.slots[claim.slot];
            if slot.status.load(Ordering::Relaxed) != claim.building.0 {
                return false; // Taken over by a later build.
            }
            slot.keys_added.fetch_add(filled, Ordering::Relaxed);
            slot.keys_at_build
                .store(slot.keys_added.load(Ordering::Relaxed), Ordering::Relaxed);
            slot.builds.fetch_add(1, Ordering::Relaxed);
            slot.builder.store(0, Ordering::Relaxed);
            slot.set_state(State::Valid);
            true
        })
    }
}

/// When the next build worker may be started: at most one per interval, for every database
/// (the extension keeps one in shared memory). All-zero memory lets the first launch go.
#[repr(transparent)]
#[derive(Default, Debug)]
pub struct LaunchThrottle(AtomicI64);

impl LaunchThrottle {
    /// Whether the caller may launch a worker `now`; if so, the next one may only
    /// `interval_ms` later. Of callers racing for the same turn, one gets it.
    pub fn try_launch(&self, now: i64, interval_ms: i64) -> bool {
        let next = self.0.load(Ordering::Relaxed);
        !is_future(next, now, interval_ms)
            && self
                .0
                .compare_exchange(
                    next,
                    now + interval_ms * 1000,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// Whether `moment` is still ahead of `now` (both in microseconds); a moment more than
/// `interval_ms` ahead is from before the clock was set back, and has passed.
pub fn is_future(moment: i64, now: i64, interval_ms: i64) -> bool {
    moment > now && moment <= now + interval_ms * 1000
}

#[cfg(test)]
thread_local! {
    /// What a test runs between the steps of a transition in this thread (see
    /// `between_steps`).
    static BETWEEN_STEPS: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

/// Between the steps of a transition, tests run a probe of their own (one thread, each step
/// in turn) or yield, widening the window for other threads to run in; nothing outside tests.
#[cfg(test)]
fn between_steps() {
    match BETWEEN_STEPS.with(|hook| hook.borrow_mut().take()) {
        Some(mut hook) => {
            hook(); // Its own transitions only yield.
            BETWEEN_STEPS.with(|slot| *slot.borrow_mut() = Some(hook));
        }
        None => std::thread::yield_now(),
    }
}

#[cfg(not(test))]
#[inline(always)]
fn between_steps() {}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod threads;
