//! The filter's shared memory: reserved at server start when the library is preloaded, laid
//! out as a header — its lock, the hash seed, the slots of [`MAX_DATABASES`] databases — and
//! then the words of every slot's filter.

use std::ffi::CStr;
use std::sync::atomic::AtomicU64;

use pg_session_auth_core::revocation_filter::slot::{LaunchThrottle, Slot, SlotLock, Slots};
use pg_session_auth_core::revocation_filter::{BITS_PER_KEY, WORDS_PER_BLOCK};

use crate::gucs;
use crate::pg::locks;
use crate::pg::lwlock::LwLock;
use crate::pg::shmem::{self, Region};

/// Databases that can have a filter at the same time (a slot each).
pub const MAX_DATABASES: usize = 4;

const SHMEM_NAME: &CStr = c"pg_session_auth revocation filter";
const LWLOCK_TRANCHE: &CStr = c"pg_session_auth";

/// Changes whenever the shared layout or the filter's hashing does; a library that finds
/// another value in shared memory (a replaced library under EXEC_BACKEND) does not use it.
const LAYOUT_VERSION: u64 =
    0x5053_4146_0002_0000 | (BITS_PER_KEY as u64) << 8 | WORDS_PER_BLOCK as u64;

/// The start of the region. Its words follow it, on the next cache line.
#[repr(C)]
pub struct Header {
    layout: u64,
    /// Under which the slots change state.
    lock: LwLock,
    seed: [u64; 2],
    words_per_slot: usize,
    /// When the next build worker may be started.
    next_worker_launch: LaunchThrottle,
    slots: [Slot; MAX_DATABASES],
}

// SAFETY: `Header` is integers, atomics (`LaunchThrottle` and `Slot` are made of them) and
// an `LwLock` — valid for any bytes, nothing process-local — and starts with its layout
// version, which `shared` checks before anything else is used.
static REGION: Region<Header> =
    unsafe { Region::new(SHMEM_NAME, LWLOCK_TRANCHE, region_words, create) };

/// Words per slot, from `pg_session_auth.revocation_filter_size` (fixed at server start).
fn words_per_slot() -> usize {
    let bytes = gucs::REVOCATION_FILTER_SIZE.get().max(0) as usize * 1024;
    (bytes / 8).next_multiple_of(WORDS_PER_BLOCK)
}

fn region_words() -> usize {
    MAX_DATABASES * words_per_slot()
}

/// The header of the region just created: every slot free.
fn create(lock: LwLock) -> Header {
    let seed = shmem::strong_random_seed()
        .unwrap_or_else(|| [locks::my_pid() as u64, locks::now() as u64]);
    Header {
        layout: LAYOUT_VERSION,
        lock,
        seed,
        words_per_slot: words_per_slot(),
        next_worker_launch: LaunchThrottle::default(),
        slots: Default::default(),
    }
}

/// Reserves the shared memory when the library is being preloaded and the filter is on.
/// Called from `_PG_init` after the settings are defined.
pub fn request_shared_memory() {
    if words_per_slot() == 0 {
        return;
    }
    REGION.request();
}

impl SlotLock for LwLock {
    fn exclusive<R>(&self, body: impl FnOnce() -> R) -> R {
        let _held = self.lock_exclusive();
        body()
    }
}

/// The shared filter as this process finds it.
pub struct Shared {
    header: &'static Header,
    words: &'static [AtomicU64],
}

/// The shared filter; `None` when the library was not preloaded, the filter is turned off,
/// or the memory was laid out by another version of the library.
pub fn shared() -> Option<Shared> {
    let (header, words) = REGION.get()?;
    (header.layout == LAYOUT_VERSION).then_some(Shared { header, words })
}

impl Shared {
    /// The slots and their filters.
    pub fn slots(&self) -> Slots<'static, LwLock> {
        let header = self.header;
        Slots::new(
            &header.slots,
            self.words,
            header.words_per_slot,
            header.seed,
            &header.lock,
        )
    }

    /// The bytes of one slot's filter.
    pub fn bytes_per_slot(&self) -> usize {
        self.header.words_per_slot * 8
    }

    /// When the next build worker may be started, for every database.
    pub fn worker_launches(&self) -> &'static LaunchThrottle {
        &self.header.next_worker_launch
    }
}
