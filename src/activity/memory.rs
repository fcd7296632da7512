//! Where activity is counted: a region of shared memory when the library is preloaded (so the
//! counts are the cluster's), otherwise the same layout in this process's memory (the
//! backend's own counts).
//!
//! Layout, in 64-bit words after the header: [`STRIPES`] stripes of counters (a backend adds to
//! the stripe of its pid, so two backends rarely share a cache line), the ring of recent
//! rejections, and the table of event windows of the failure rules.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::pg::locks;
use crate::pg::lwlock::LwLock;
use crate::pg::shmem::{self, Region};

/// Counter stripes; each is [`STRIPE_WORDS`] words (a multiple of a cache line).
pub const STRIPES: usize = 16;
pub const STRIPE_WORDS: usize = 64;
/// Rejections the ring keeps.
pub const RING_ENTRIES: usize = 512;
pub const ENTRY_WORDS: usize = 40;
/// Windows the failure rules can count in at once (the oldest are reused).
pub const WINDOWS: usize = 1024;
pub const WINDOW_WORDS: usize = 4;

const COUNTERS_AT: usize = 0;
const RING_AT: usize = COUNTERS_AT + STRIPES * STRIPE_WORDS;
const WINDOWS_AT: usize = RING_AT + RING_ENTRIES * ENTRY_WORDS;
const TOTAL_WORDS: usize = WINDOWS_AT + WINDOWS * WINDOW_WORDS;

const SHMEM_NAME: &CStr = c"pg_session_auth activity";
const LWLOCK_TRANCHE: &CStr = c"pg_session_auth activity";

/// Raised by hand whenever the layout or the meaning of a word changes; a library that finds
/// another version, or another size, does not use the region (a replaced library under
/// EXEC_BACKEND).
const LAYOUT_VERSION: u64 = 0x5053_4141_0000_0001;

#[repr(C)]
pub struct Header {
    layout: u64,
    /// The words after the header.
    words: u64,
    lock: LwLock,
    seed: [u64; 2],
    /// Rejections ever written to the ring.
    ring_written: AtomicU64,
}

// SAFETY: `Header` is integers, an atomic and an `LwLock` — valid for any bytes, nothing
// process-local — and starts with its layout version, checked before anything else is used.
static REGION: Region<Header> =
    unsafe { Region::new(SHMEM_NAME, LWLOCK_TRANCHE, || TOTAL_WORDS, create) };

fn create(lock: LwLock) -> Header {
    Header {
        layout: LAYOUT_VERSION,
        words: TOTAL_WORDS as u64,
        lock,
        seed: seed(),
        ring_written: AtomicU64::new(0),
    }
}

fn seed() -> [u64; 2] {
    shmem::strong_random_seed().unwrap_or_else(|| [locks::my_pid() as u64, locks::now() as u64])
}

/// Reserves the shared memory when the library is being preloaded. From `_PG_init`.
pub fn request_shared_memory() {
    REGION.request();
}

/// The counts as this process finds them.
#[derive(Clone, Copy)]
pub struct Memory {
    /// The region's lock, `None` in process memory (one process, nothing to exclude).
    lock: Option<LwLock>,
    seed: [u64; 2],
    ring_written: &'static AtomicU64,
    words: &'static [AtomicU64],
    pub cluster_wide: bool,
}

struct Local {
    seed: [u64; 2],
    ring_written: AtomicU64,
    words: Box<[AtomicU64]>,
}

static LOCAL: OnceLock<&'static Local> = OnceLock::new();

/// The shared region, or this process's memory when the library was not preloaded.
pub fn memory() -> Memory {
    if let Some((header, words)) = REGION.get() {
        if header.layout == LAYOUT_VERSION && header.words == TOTAL_WORDS as u64 {
            return Memory {
                lock: Some(header.lock),
                seed: header.seed,
                ring_written: &header.ring_written,
                words,
                cluster_wide: true,
            };
        }
    }
    let local = LOCAL.get_or_init(|| {
        Box::leak(Box::new(Local {
            seed: seed(),
            ring_written: AtomicU64::new(0),
            words: (0..TOTAL_WORDS).map(|_| AtomicU64::new(0)).collect(),
        }))
    });
    Memory {
        lock: None,
        seed: local.seed,
        ring_written: &local.ring_written,
        words: &local.words,
        cluster_wide: false,
    }
}

impl Memory {
    /// Runs `body` holding the region's lock.
    pub fn locked<R>(&self, body: impl FnOnce() -> R) -> R {
        let _held = self.lock.as_ref().map(LwLock::lock_exclusive);
        body()
    }

    /// The counter `index` of `stripe`.
    pub fn counter(&self, stripe: usize, index: usize) -> &'static AtomicU64 {
        &self.words[COUNTERS_AT + (stripe % STRIPES) * STRIPE_WORDS + index % STRIPE_WORDS]
    }

    /// The words of ring entry `slot`.
    pub fn ring_entry(&self, slot: usize) -> &'static [AtomicU64] {
        let start = RING_AT + (slot % RING_ENTRIES) * ENTRY_WORDS;
        &self.words[start..start + ENTRY_WORDS]
    }

    /// Rejections ever written (the next entry's number); under the lock.
    pub fn ring_written(&self) -> &'static AtomicU64 {
        self.ring_written
    }

    /// The words of window `slot`.
    pub fn window(&self, slot: usize) -> &'static [AtomicU64] {
        let start = WINDOWS_AT + (slot % WINDOWS) * WINDOW_WORDS;
        &self.words[start..start + WINDOW_WORDS]
    }

    /// A key for `parts`, keyed by the region's random seed (an attacker who picks the
    /// addresses or subjects cannot aim at one slot), never 0 (a free window).
    pub fn key_of(&self, parts: &[&[u8]]) -> u64 {
        pg_session_auth_core::activity::keyed_hash(self.seed, parts) | 1
    }
}

/// Reads a word.
pub fn load(word: &AtomicU64) -> u64 {
    word.load(Ordering::Relaxed)
}

/// Writes a word.
pub fn store(word: &AtomicU64, value: u64) {
    word.store(value, Ordering::Relaxed);
}
