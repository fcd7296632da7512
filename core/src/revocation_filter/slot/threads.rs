//! Many threads at once: writers, builders and readers hammer the same slots, as backends,
//! build workers and checks do in the server, and the invariants of the module documentation
//! are checked throughout and at the end.
//!
//! The revocation tables are modelled by [`Table`]: a writer appends its row under the table's
//! mutex (in the server: the heap page's lock) and then adds its key, as the row trigger runs
//! after the row is in the heap; a builder reads every row under the same mutex after its claim
//! (the dirty-snapshot scan). A key is *committed* once its writer's `add` has returned; a
//! reader checks only keys committed before it began, and must never be told `Clear` for one.
//! The windows between a transition's steps are widened by yields (`between_steps`), and
//! readers probe slowly, so that the threads interleave inside them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::tests::{Memory, MutexLock};
use super::*;

/// How long each test hammers at least; then until enough happened to tell (see
/// [`Findings::run`]), at most [`MAX_RUN`].
const RUN: Duration = Duration::from_millis(700);
const MAX_RUN: Duration = Duration::from_secs(30);
/// Rows a writer writes at most (keeps builds short).
const ROWS_PER_WRITER: usize = 5_000;
/// Words per slot: a filter large enough that clearing it takes a while.
const WORDS_PER_SLOT: usize = 32 * 1024;

/// A xorshift generator: the tests need no quality, only variety.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One incarnation of one database's revocation tables.
struct Table {
    database: u32,
    incarnation: Incarnation,
    /// Every row written, committed or not (the heap).
    rows: Mutex<Vec<String>>,
    /// Keys whose writer's `add` returned.
    committed: Mutex<Vec<String>>,
    /// Whether writers and readers still use it.
    dropped: AtomicBool,
}

impl Table {
    fn new(database: u32, incarnation: u32) -> Table {
        Table {
            database,
            incarnation: Incarnation {
                tables: [incarnation * 3, incarnation * 3 + 1, incarnation * 3 + 2],
                triggers_version: u64::from(incarnation),
            },
            rows: Mutex::new(Vec::new()),
            committed: Mutex::new(Vec::new()),
            dropped: AtomicBool::new(false),
        }
    }
}

/// What the threads found.
#[derive(Default)]
struct Findings {
    /// Committed keys a reader was told were clear.
    missed: Mutex<Vec<String>>,
    /// Reads that began on a valid filter.
    valid_reads: AtomicUsize,
    builds: AtomicUsize,
    /// Per slot, builders between their claim and their finish.
    building: [AtomicUsize; 2],
    /// The most builders of one slot at once.
    most_building: AtomicUsize,
    /// Set when the threads are to stop.
    stop: AtomicBool,
}

impl Findings {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Lets the threads run for [`RUN`], then until enough happened to tell — on a busy
    /// machine that takes longer — and stops them; at once when a thread failed.
    fn run(&self, minimum_valid_reads: usize, minimum_builds: usize) {
        let start = Instant::now();
        while self.running()
            && (start.elapsed() < RUN
                || self.valid_reads.load(Ordering::Relaxed) < minimum_valid_reads
                || self.builds.load(Ordering::Relaxed) < minimum_builds)
            && start.elapsed() < MAX_RUN
        {
            thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    fn check(&self, minimum_valid_reads: usize, minimum_builds: usize) {
        let missed = self.missed.lock().unwrap();
        assert!(
            missed.is_empty(),
            "{} committed keys screened as clear, e.g. {:?}",
            missed.len(),
            &missed[..missed.len().min(5)]
        );
        let most = self.most_building.load(Ordering::Relaxed);
        assert!(most <= 1, "{most} builders of one slot at once");
        let reads = self.valid_reads.load(Ordering::Relaxed);
        let builds = self.builds.load(Ordering::Relaxed);
        assert!(
            reads >= minimum_valid_reads && builds >= minimum_builds,
            "too little happened to tell: {reads} reads of a valid filter, {builds} builds"
        );
    }

    fn claimed(&self, claim: &Claim) {
        let now = self.building[claim.slot()].fetch_add(1, Ordering::SeqCst) + 1;
        self.most_building.fetch_max(now, Ordering::SeqCst);
    }

    /// Called just before [`Slots::finish`] (or instead of it).
    fn finishing(&self, claim: &Claim) {
        self.building[claim.slot()].fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stops the other threads when the thread that holds it panics (a failed assertion), so
/// that the test ends at once.
struct StopOnPanic<'f>(&'f Findings);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Writes rows to `table` until stopped or [`ROWS_PER_WRITER`].
fn write(slots: &Slots<'_, MutexLock>, table: &Table, writer: usize, findings: &Findings) {
    for n in 0..ROWS_PER_WRITER {
        if !findings.running() || table.dropped.load(Ordering::Relaxed) {
            return;
        }
        let key = format!(
            "{}/{}/{writer}/{n}",
            table.database, table.incarnation.triggers_version
        );
        table.rows.lock().unwrap().push(key.clone());
        slots.add(table.database, FilterKey::Token(&key));
        table.committed.lock().unwrap().push(key);
        if n % 16 == 0 {
            thread::yield_now();
        }
    }
}

/// Checks committed keys of random tables until stopped.
fn read(slots: &Slots<'_, MutexLock>, tables: &[Table], findings: &Findings, seed: u64) {
    let mut rng = Rng(seed);
    while findings.running() {
        let table = &tables[rng.below(tables.len())];
        if table.dropped.load(Ordering::Relaxed) {
            continue;
        }
        // Chosen before the read begins: committed before it.
        let key = {
            let committed = table.committed.lock().unwrap();
            if committed.is_empty() {
                drop(committed);
                thread::yield_now();
                continue;
            }
            committed[rng.below(committed.len())].clone()
        };
        let Some(i) = slots.slot_of(table.database) else {
            continue;
        };
        let Some(reading) = slots.begin_read(i, table.database, &table.incarnation) else {
            continue;
        };
        findings.valid_reads.fetch_add(1, Ordering::Relaxed);
        // A slow probe: the key is handed over after a yield.
        let keys = std::iter::once(()).map(|()| {
            thread::yield_now();
            FilterKey::Token(&key)
        });
        if slots.screen(reading, keys) == Screening::Clear {
            findings.missed.lock().unwrap().push(key);
        }
    }
}

/// Claims a slot for `table` (forced), fills it from the table's rows, and finishes; returns
/// whether it finished a build.
fn build(
    slots: &Slots<'_, MutexLock>,
    table: &Table,
    builder: i32,
    alive: impl Fn(i32) -> bool,
    dropped: impl Fn(u32) -> bool,
    findings: &Findings,
) -> Option<Claim> {
    let abandoned = slots.abandoned(dropped);
    let claimant = Claimant {
        database: table.database,
        incarnation: &table.incarnation,
        builder,
        now: 0,
        force: true,
    };
    let claim = slots.claim(&claimant, &abandoned, alive).ok()?;
    findings.claimed(&claim);
    // The scan: every row already in the table.
    let rows = table.rows.lock().unwrap().clone();
    let filter = slots.filter(claim.slot());
    for (n, row) in rows.iter().enumerate() {
        filter.insert(FilterKey::Token(row));
        if n % 256 == 0 {
            thread::yield_now();
        }
    }
    Some(claim)
}

/// Every committed key of a table whose filter is valid at the end is in it.
fn check_final(slots: &Slots<'_, MutexLock>, tables: &[Table]) {
    for table in tables.iter().filter(|t| !t.dropped.load(Ordering::Relaxed)) {
        let Some(i) = slots.slot_of(table.database) else {
            continue;
        };
        let Some(reading) = slots.begin_read(i, table.database, &table.incarnation) else {
            continue;
        };
        for key in table.committed.lock().unwrap().iter() {
            let keys = std::iter::once(FilterKey::Token(key));
            assert_eq!(
                slots.screen(reading, keys),
                Screening::LookUp,
                "{key} is committed but not in the final filter"
            );
        }
    }
}

/// Between builds: long enough for readers to find the filter valid.
fn pause() {
    thread::sleep(Duration::from_millis(2));
}

/// One of these tests at a time: each wants the machine's cores for its own threads.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn no_committed_key_is_missed_while_the_filter_is_rebuilt() {
    let _alone = one_at_a_time();
    let memory = Memory::new(1, WORDS_PER_SLOT);
    let slots = memory.slots();
    let tables = [Table::new(1, 1)];
    let findings = Findings::default();
    thread::scope(|scope| {
        for writer in 0..2 {
            let (slots, tables, findings) = (&slots, &tables, &findings);
            scope.spawn(move || write(slots, &tables[0], writer, findings));
        }
        for reader in 0..2 {
            let (slots, tables, findings) = (&slots, &tables, &findings);
            scope.spawn(move || read(slots, tables, findings, 7 + reader));
        }
        for builder in 1..=2 {
            let (slots, tables, findings) = (&slots, &tables, &findings);
            scope.spawn(move || {
                let _stop = StopOnPanic(findings);
                while findings.running() {
                    let built = build(slots, &tables[0], builder, |_| true, |_| false, findings);
                    if let Some(claim) = built {
                        findings.finishing(&claim);
                        // Every builder is alive: nobody takes a build over.
                        assert!(slots.finish(claim, 0), "a live builder was taken over");
                        findings.builds.fetch_add(1, Ordering::Relaxed);
                    }
                    pause();
                }
            });
        }
        findings.run(200, 5);
    });
    check_final(&slots, &tables);
    findings.check(200, 5);
}

#[test]
fn a_reader_never_uses_a_filter_built_for_another_incarnation() {
    let _alone = one_at_a_time();
    let memory = Memory::new(1, WORDS_PER_SLOT);
    let slots = memory.slots();
    // The extension dropped and created again: same database, other tables.
    let tables = [Table::new(1, 1), Table::new(1, 2)];
    let findings = Findings::default();
    thread::scope(|scope| {
        for writer in 0..2 {
            let (slots, tables, findings) = (&slots, &tables, &findings);
            scope.spawn(move || write(slots, &tables[writer], writer, findings));
        }
        for reader in 0..2 {
            let (slots, tables, findings) = (&slots, &tables, &findings);
            scope.spawn(move || read(slots, tables, findings, 3 + reader));
        }
        for builder in 1..=2 {
            let (slots, tables, findings) = (&slots, &tables, &findings);
            scope.spawn(move || {
                let _stop = StopOnPanic(findings);
                let mut rng = Rng(builder as u64 * 31);
                while findings.running() {
                    let table = &tables[rng.below(2)];
                    let built = build(slots, table, builder, |_| true, |_| false, findings);
                    if let Some(claim) = built {
                        findings.finishing(&claim);
                        assert!(slots.finish(claim, 0), "a live builder was taken over");
                        findings.builds.fetch_add(1, Ordering::Relaxed);
                    }
                    pause();
                }
            });
        }
        findings.run(200, 5);
    });
    check_final(&slots, &tables);
    findings.check(200, 5);
}

#[test]
fn slots_pass_from_dropped_databases_to_others_without_misses() {
    let _alone = one_at_a_time();
    // Two slots, three databases; the first is dropped after a while.
    let memory = Memory::new(2, WORDS_PER_SLOT);
    let slots = memory.slots();
    let tables = [Table::new(1, 1), Table::new(2, 2), Table::new(3, 3)];
    let findings = Findings::default();
    let refused = AtomicUsize::new(0);
    let dropped = |database: u32| {
        tables[database as usize - 1]
            .dropped
            .load(Ordering::Relaxed)
    };
    // The first two take the slots; the third waits for one.
    for (builder, table) in (1..).zip(&tables[..2]) {
        let claim = build(&slots, table, builder, |_| true, dropped, &findings).unwrap();
        findings.finishing(&claim);
        assert!(slots.finish(claim, 0));
    }
    assert!(build(&slots, &tables[2], 3, |_| true, dropped, &findings).is_none());
    thread::scope(|scope| {
        for (writer, table) in tables.iter().enumerate() {
            let (slots, findings) = (&slots, &findings);
            scope.spawn(move || write(slots, table, writer, findings));
        }
        for reader in 0..2 {
            let (slots, tables, findings) = (&slots, &tables, &findings);
            scope.spawn(move || read(slots, tables, findings, 5 + reader));
        }
        // One builder per database, as one worker per database would.
        for (builder, table) in (1..).zip(&tables) {
            let (slots, findings, refused, dropped) = (&slots, &findings, &refused, &dropped);
            scope.spawn(move || {
                let _stop = StopOnPanic(findings);
                while findings.running() && !table.dropped.load(Ordering::Relaxed) {
                    match build(slots, table, builder, |_| true, dropped, findings) {
                        Some(claim) => {
                            findings.finishing(&claim);
                            assert!(slots.finish(claim, 0), "a live builder was taken over");
                            findings.builds.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    pause();
                }
            });
        }
        thread::sleep(RUN / 3);
        tables[0].dropped.store(true, Ordering::Relaxed);
        findings.run(200, 5);
    });
    check_final(&slots, &tables);
    findings.check(200, 5);
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "a database waited for a slot"
    );
    assert_eq!(
        slots.slot_of(1),
        None,
        "the dropped database's slot was taken over"
    );
    assert!(slots.slot_of(2).is_some() && slots.slot_of(3).is_some());
}

#[test]
fn one_live_builder_at_a_time_and_dead_builders_cannot_finish() {
    let _alone = one_at_a_time();
    let memory = Memory::new(1, WORDS_PER_SLOT);
    let slots = memory.slots();
    let tables = [Table::new(1, 1)];
    let findings = Findings::default();
    let alive: Mutex<HashSet<i32>> = Mutex::new(HashSet::new());
    let claims = AtomicUsize::new(0);
    let deaths = AtomicUsize::new(0);
    thread::scope(|scope| {
        scope.spawn(|| write(&slots, &tables[0], 0, &findings));
        scope.spawn(|| read(&slots, &tables, &findings, 9));
        for thread_number in 0..3 {
            let (slots, tables, findings) = (&slots, &tables, &findings);
            let (alive, claims, deaths) = (&alive, &claims, &deaths);
            scope.spawn(move || {
                let _stop = StopOnPanic(findings);
                let mut rng = Rng(thread_number as u64 * 77 + 1);
                // Each build gets a new builder id, as each worker gets a new pid.
                let mut builder = thread_number * 1_000_000;
                while findings.running() {
                    builder += 1;
                    alive.lock().unwrap().insert(builder);
                    let is_alive = |pid| alive.lock().unwrap().contains(&pid);
                    let Some(claim) =
                        build(slots, &tables[0], builder, is_alive, |_| false, findings)
                    else {
                        alive.lock().unwrap().remove(&builder);
                        pause();
                        continue;
                    };
                    let mine = claims.fetch_add(1, Ordering::SeqCst) + 1;
                    findings.finishing(&claim);
                    if rng.below(3) == 0 {
                        // Dies before finishing; once another build has claimed the slot,
                        // a late finish must change nothing.
                        alive.lock().unwrap().remove(&builder);
                        deaths.fetch_add(1, Ordering::Relaxed);
                        while claims.load(Ordering::SeqCst) == mine && findings.running() {
                            thread::yield_now();
                        }
                        if claims.load(Ordering::SeqCst) != mine {
                            assert!(!slots.finish(claim, 0), "a dead builder finished");
                        }
                    } else {
                        assert!(slots.finish(claim, 0), "a live builder was taken over");
                        alive.lock().unwrap().remove(&builder);
                        findings.builds.fetch_add(1, Ordering::Relaxed);
                    }
                    pause();
                }
            });
        }
        findings.run(50, 5);
    });
    check_final(&slots, &tables);
    findings.check(50, 5);
    assert!(deaths.load(Ordering::Relaxed) > 0);
}
