//! One transition at a time, in one thread.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use super::*;

/// The tests' [`SlotLock`]: a mutex (the extension's is an LWLock).
#[derive(Default)]
pub(super) struct MutexLock(Mutex<()>);

impl SlotLock for MutexLock {
    fn exclusive<R>(&self, body: impl FnOnce() -> R) -> R {
        let _held = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        body()
    }
}

/// What the extension keeps in shared memory: slots, their words, the lock.
pub(super) struct Memory {
    slots: Vec<Slot>,
    words: Vec<AtomicU64>,
    words_per_slot: usize,
    lock: MutexLock,
}

impl Memory {
    pub(super) fn new(slots: usize, words_per_slot: usize) -> Self {
        Memory {
            slots: (0..slots).map(|_| Slot::default()).collect(),
            words: (0..slots * words_per_slot)
                .map(|_| AtomicU64::new(0))
                .collect(),
            words_per_slot,
            lock: MutexLock::default(),
        }
    }

    pub(super) fn slots(&self) -> Slots<'_, MutexLock> {
        Slots::new(
            &self.slots,
            &self.words,
            self.words_per_slot,
            [11, 12],
            &self.lock,
        )
    }
}

const A: Incarnation = Incarnation {
    tables: [10, 11, 12],
    triggers_version: 1,
};
const B: Incarnation = Incarnation {
    tables: [20, 21, 22],
    triggers_version: 2,
};
const DB: u32 = 5;
const ME: i32 = 100;
const SECOND: i64 = 1_000_000;

fn claimant(database: u32, incarnation: &Incarnation, builder: i32, force: bool) -> Claimant<'_> {
    Claimant {
        database,
        incarnation,
        builder,
        now: 50 * SECOND,
        force,
    }
}

fn nobody(_: i32) -> bool {
    false
}

fn everybody(_: i32) -> bool {
    true
}

fn key(name: &str) -> FilterKey<'_> {
    FilterKey::Token(name)
}

/// A slot of `DB` that is `Valid` for `A` and holds `"built"`.
fn built(memory: &Memory) -> Slots<'_, MutexLock> {
    let slots = memory.slots();
    let claim = slots
        .claim(&claimant(DB, &A, ME, false), &[], nobody)
        .unwrap();
    slots.filter(claim.slot()).insert(key("built"));
    assert!(slots.finish(claim, 1));
    slots
}

#[test]
fn zeroed_memory_is_free_slots_and_the_layout_is_pinned() {
    assert_eq!(State::of(0), State::Free);
    assert_eq!(Slot::default().state(), State::Free);
    // The extension's shared layout (LAYOUT_VERSION in src/revocation/filter/region.rs)
    // changes with these.
    assert_eq!(std::mem::size_of::<Slot>(), 72);
    assert_eq!(std::mem::align_of::<Slot>(), 8);
    assert_eq!(std::mem::size_of::<LaunchThrottle>(), 8);
}

#[test]
fn a_build_goes_from_claim_through_building_to_valid() {
    let memory = Memory::new(2, 64);
    let slots = memory.slots();
    assert_eq!(slots.slot_of(DB), None);
    let claim = slots
        .claim(&claimant(DB, &A, ME, false), &[], nobody)
        .unwrap();
    assert_eq!(claim.slot(), 0);
    assert_eq!(slots.slot(0).state(), State::Building);
    assert_eq!(slots.slot_of(DB), Some(0));
    assert!(slots.begin_read(0, DB, &A).is_none(), "read while building");

    slots.add(DB, key("written while building"));
    slots.filter(0).insert(key("scanned"));
    assert!(slots.finish(claim, 1));
    assert_eq!(slots.slot(0).state(), State::Valid);
    assert_eq!(slots.slot(0).keys(), 2);
    assert_eq!(slots.slot(0).builds(), 1);

    let reading = slots.begin_read(0, DB, &A).unwrap();
    assert_eq!(
        slots.screen(reading, [key("other")].into_iter()),
        Screening::Clear
    );
    for stored in ["written while building", "scanned"] {
        let keys = [key("other"), key(stored)].into_iter();
        assert_eq!(slots.screen(reading, keys), Screening::LookUp);
    }
    assert!(slots.begin_read(0, DB, &B).is_none(), "another incarnation");
    assert!(
        slots.begin_read(0, DB + 1, &A).is_none(),
        "another database"
    );
}

#[test]
fn writers_add_only_while_building_or_valid() {
    let memory = Memory::new(1, 64);
    let slots = memory.slots();
    slots.add(DB, key("no slot"));
    let claim = slots
        .claim(&claimant(DB, &A, ME, false), &[], nobody)
        .unwrap();
    slots.give_up(&claim, 0);
    assert_eq!(slots.slot(0).state(), State::Invalid);
    slots.add(DB, key("invalid"));
    assert_eq!(slots.slot(0).keys(), 0);
    assert!(!slots.filter(0).may_contain(key("invalid")));

    let slots = built(&memory);
    slots.add(DB, key("valid"));
    slots.add(DB + 1, key("another database"));
    assert_eq!(slots.slot(0).keys(), 2);
    assert!(slots.filter(0).may_contain(key("valid")));
    assert!(!slots.filter(0).may_contain(key("another database")));
}

#[test]
fn a_reader_whose_slot_is_claimed_meanwhile_looks_up() {
    let memory = Memory::new(1, 64);
    let slots = built(&memory);
    let reading = slots.begin_read(0, DB, &A).unwrap();
    let claim = slots
        .claim(&claimant(DB, &A, ME, true), &[], nobody)
        .unwrap();
    assert_eq!(
        slots.screen(reading, [key("x")].into_iter()),
        Screening::LookUp
    );
    // Valid again, for the same incarnation: the count tells the reads apart.
    assert!(slots.finish(claim, 0));
    assert_eq!(
        slots.screen(reading, [key("x")].into_iter()),
        Screening::LookUp
    );
    let fresh = slots.begin_read(0, DB, &A).unwrap();
    assert_eq!(
        slots.screen(fresh, [key("x")].into_iter()),
        Screening::Clear
    );
}

#[test]
fn no_read_during_a_claim_trusts_the_words_being_cleared() {
    // Valid for A, holding "built"; B's tables hold "b row", which A's filter lacks.
    let memory: &'static Memory = Box::leak(Box::new(Memory::new(1, 64)));
    let slots = built(memory);
    assert!(!slots.filter(0).may_contain(key("b row")));
    let begun_before = slots.begin_read(0, DB, &A).unwrap();
    // At every step of a claim for B: a read begun before it, and reads begun now for A and
    // for B, each of a key its tables hold.
    type Seen = (Screening, Option<Screening>, Option<Screening>);
    let seen: std::rc::Rc<std::cell::RefCell<Vec<Seen>>> = Default::default();
    let record = seen.clone();
    BETWEEN_STEPS.with(|hook| {
        *hook.borrow_mut() = Some(Box::new(move || {
            let slots = memory.slots();
            let read = |incarnation: &Incarnation, stored: &'static str| {
                let reading = slots.begin_read(0, DB, incarnation)?;
                Some(slots.screen(reading, [key(stored)].into_iter()))
            };
            let then = slots.screen(begun_before, [key("built")].into_iter());
            record
                .borrow_mut()
                .push((then, read(&A, "built"), read(&B, "b row")));
        }))
    });
    let claim = slots.claim(&claimant(DB, &B, ME, true), &[], nobody);
    BETWEEN_STEPS.with(|hook| hook.borrow_mut().take());
    assert!(claim.is_ok());
    let seen = seen.borrow();
    assert!(seen.len() >= 3, "steps seen: {}", seen.len());
    for (step, (then, a, b)) in seen.iter().enumerate() {
        assert_eq!(*then, Screening::LookUp, "step {step}: a read begun before");
        assert_ne!(
            *a,
            Some(Screening::Clear),
            "step {step}: a read of A begun now"
        );
        assert_ne!(
            *b,
            Some(Screening::Clear),
            "step {step}: a read of B begun now"
        );
    }
}

#[test]
fn one_builder_at_a_time_and_dead_ones_are_taken_over() {
    let memory = Memory::new(1, 64);
    let slots = memory.slots();
    let first = slots
        .claim(&claimant(DB, &A, ME, false), &[], nobody)
        .unwrap();
    for force in [false, true] {
        let second = slots.claim(&claimant(DB, &A, ME + 1, force), &[], everybody);
        assert_eq!(second.unwrap_err(), Refusal::NotNow);
    }
    // The first builder died: taken over; its late finish changes nothing.
    let second = slots
        .claim(&claimant(DB, &A, ME + 1, false), &[], |pid| pid != ME)
        .unwrap();
    assert!(!slots.finish(first, 5));
    assert_eq!(slots.slot(0).state(), State::Building);
    assert_eq!(slots.slot(0).builds(), 0);
    assert!(slots.finish(second, 0));
    assert_eq!(slots.slot(0).builds(), 1);
    // A finished build's builder no longer counts, alive or not.
    assert!(slots
        .claim(&claimant(DB, &A, ME + 2, true), &[], everybody)
        .is_ok());
}

#[test]
fn a_valid_filter_is_rebuilt_only_when_forced_for_another_incarnation_or_too_full() {
    let memory = Memory::new(1, 64);
    let slots = built(&memory);
    let again = slots.claim(&claimant(DB, &A, ME, false), &[], nobody);
    assert_eq!(again.unwrap_err(), Refusal::NotNow);
    assert_eq!(
        slots.slot(0).state(),
        State::Valid,
        "a refusal changes nothing"
    );
    let forced = slots
        .claim(&claimant(DB, &A, ME, true), &[], nobody)
        .unwrap();
    assert!(slots.finish(forced, 1));
    let other = slots
        .claim(&claimant(DB, &B, ME, false), &[], nobody)
        .unwrap();
    assert!(slots.finish(other, 1));

    // Too full: more keys than its capacity (and than twice those of its last build).
    let capacity = slots.capacity();
    for i in 1..capacity {
        slots.add(DB, key(&format!("k{i}")));
    }
    let full = slots.claim(&claimant(DB, &B, ME, false), &[], nobody);
    assert_eq!(full.unwrap_err(), Refusal::NotNow, "at capacity");
    slots.add(DB, key("one more"));
    assert!(slots
        .claim(&claimant(DB, &B, ME, false), &[], nobody)
        .is_ok());
}

#[test]
fn a_filter_that_its_last_build_filled_beyond_capacity_is_not_rebuilt_until_it_doubles() {
    let memory = Memory::new(1, 64);
    let slots = memory.slots();
    let capacity = slots.capacity();
    let claim = slots
        .claim(&claimant(DB, &A, ME, false), &[], nobody)
        .unwrap();
    assert!(slots.finish(claim, 2 * capacity));
    slots.add(DB, key("x"));
    let again = slots.claim(&claimant(DB, &A, ME, false), &[], nobody);
    assert_eq!(again.unwrap_err(), Refusal::NotNow);
    assert!(!slots.needs_build(0, true, nobody, || 0));
    for i in 0..2 * capacity {
        slots.add(DB, key(&format!("k{i}")));
    }
    assert!(slots.needs_build(0, true, nobody, || 0));
}

#[test]
fn after_a_failed_build_unforced_claims_wait() {
    let memory = Memory::new(1, 64);
    let slots = memory.slots();
    let claim = slots
        .claim(&claimant(DB, &A, ME, false), &[], nobody)
        .unwrap();
    let failed_at = 50 * SECOND;
    slots.give_up(&claim, failed_at);
    assert_eq!(slots.slot(0).state(), State::Invalid);
    let at = |now: i64, force: bool| Claimant {
        now,
        ..claimant(DB, &A, ME, force)
    };
    let retry = failed_at + RETRY_AFTER_MS * 1000;
    assert_eq!(
        slots.claim(&at(retry - 1, false), &[], nobody).unwrap_err(),
        Refusal::NotNow
    );
    assert!(!slots.needs_build(0, false, nobody, || retry - 1));
    assert!(slots.needs_build(0, false, nobody, || retry));
    let forced = slots.claim(&at(failed_at, true), &[], nobody).unwrap();
    // Giving up a claim that was taken over leaves the slot alone.
    let later = slots.claim(&at(failed_at, true), &[], nobody).unwrap();
    slots.give_up(&forced, failed_at);
    assert_eq!(slots.slot(0).state(), State::Building);
    assert!(slots.finish(later, 0));
    assert!(
        slots.claim(&at(retry, false), &[], nobody).is_err(),
        "valid"
    );
}

#[test]
fn databases_share_the_slots_and_take_over_those_of_dropped_ones() {
    let memory = Memory::new(2, 64);
    let slots = memory.slots();
    for database in [1, 2] {
        let claim = slots
            .claim(&claimant(database, &A, ME, false), &[], nobody)
            .unwrap();
        assert!(slots.finish(claim, 0));
    }
    assert!(!slots.any_claimable(|_| false));
    assert_eq!(
        slots
            .claim(&claimant(3, &A, ME, false), &[], nobody)
            .unwrap_err(),
        Refusal::NoSlot
    );
    let dropped = |database: u32| database == 1;
    assert!(slots.any_claimable(dropped));
    let abandoned = slots.abandoned(dropped);
    assert_eq!(abandoned.len(), 1);

    // Seen abandoned, then changed before the claim: not taken.
    let claim = slots
        .claim(&claimant(1, &A, ME, true), &[], nobody)
        .unwrap();
    assert_eq!(
        slots
            .claim(&claimant(3, &A, ME, false), &abandoned, nobody)
            .unwrap_err(),
        Refusal::NoSlot
    );
    assert!(slots.finish(claim, 0));

    let abandoned = slots.abandoned(dropped);
    let claim = slots
        .claim(&claimant(3, &B, ME, false), &abandoned, nobody)
        .unwrap();
    assert_eq!(claim.slot(), 0);
    assert_eq!(slots.slot_of(1), None);
    assert_eq!(slots.slot_of(3), Some(0));
    assert!(slots.finish(claim, 0));
    assert!(slots.begin_read(0, 3, &B).is_some());
    assert!(slots.begin_read(0, 1, &A).is_none());
}

#[test]
fn free_slots_are_claimable_and_not_listed_as_abandoned() {
    let memory = Memory::new(2, 64);
    let slots = memory.slots();
    assert!(slots.any_claimable(|_| false));
    assert!(slots.abandoned(|_| true).is_empty());
}

#[test]
fn checks_ask_for_a_build_only_when_one_can_start() {
    let memory = Memory::new(1, 64);
    let slots = memory.slots();
    let never = || -> i64 { panic!("the clock is not needed") };
    let claim = slots
        .claim(&claimant(DB, &A, ME, false), &[], nobody)
        .unwrap();
    // Building: only when its builder is gone.
    assert!(!slots.needs_build(0, false, everybody, never));
    assert!(slots.needs_build(0, false, nobody, never));
    assert!(slots.finish(claim, 0));
    // Valid and usable, with room: no.
    assert!(!slots.needs_build(0, true, everybody, never));
    // Valid for another incarnation (not usable): yes.
    assert!(slots.needs_build(0, false, everybody, || 0));
}

#[test]
fn a_clock_set_back_does_not_hold_things_up() {
    let now = 100 * SECOND;
    assert!(!is_future(now, now, 1));
    assert!(is_future(now + 1, now, 1));
    assert!(is_future(now + 1000, now, 1));
    assert!(
        !is_future(now + 1001, now, 1),
        "from before the clock was set back"
    );
    assert!(!is_future(now - 1, now, 1));
}

#[test]
fn one_worker_launch_per_interval() {
    let throttle = LaunchThrottle::default();
    let now = 100 * SECOND;
    assert!(throttle.try_launch(now, 200));
    assert!(!throttle.try_launch(now, 200));
    assert!(!throttle.try_launch(now + 199_999, 200));
    assert!(throttle.try_launch(now + 200_000, 200));
    // The clock set back by a minute: the next launch is not a minute away.
    assert!(throttle.try_launch(now - 60 * SECOND, 200));
}

#[test]
#[should_panic(expected = "whole filter")]
fn slots_need_their_whole_filters() {
    let words: Vec<AtomicU64> = (0..64).map(|_| AtomicU64::new(0)).collect();
    let slots: Vec<Slot> = (0..2).map(|_| Slot::default()).collect();
    let lock = MutexLock::default();
    Slots::new(&slots, &words, 64, [0, 0], &lock);
}
