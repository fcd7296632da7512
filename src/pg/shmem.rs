//! Add-in shared memory: reserved while the library is preloaded, created once by the
//! postmaster, found again by every process that uses it.
//!
//! A [`Region`] is laid out as a header `H` on a cache line, followed by atomic 64-bit words,
//! and comes with one LWLock of its own. The hooks below serve every region requested.

use std::ffi::CStr;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use pgrx::pg_guard;
use pgrx::pg_sys;

use super::compat;
use super::lwlock::LwLock;
use super::settings;

/// A region of add-in shared memory: a header `H`, then `words()` atomic words.
pub struct Region<H: 'static> {
    name: &'static CStr,
    lwlock_tranche: &'static CStr,
    words: fn() -> usize,
    create: fn(LwLock) -> H,
    /// Where this process found the header (null until then), and how many words follow it.
    header: AtomicPtr<H>,
    word_count: AtomicUsize,
}

impl<H: Sync + 'static> Region<H> {
    /// A region named `name` in the server's shared memory index, with the LWLock tranche
    /// `lwlock_tranche` (one lock). `words` says how many words follow the header (from
    /// settings fixed at server start: it is asked when reserving and when creating);
    /// `create` makes the header of the region just created, given its lock.
    ///
    /// # Safety
    /// `H` must be fit to live in shared memory and to be read by any process: only
    /// integers, atomics and [`LwLock`]s (valid for every bit pattern, no pointers into
    /// process-local memory). A region found already created was laid out by whichever copy
    /// of the library created it: `H` starts with a version that users check before they
    /// touch anything else.
    pub const unsafe fn new(
        name: &'static CStr,
        lwlock_tranche: &'static CStr,
        words: fn() -> usize,
        create: fn(LwLock) -> H,
    ) -> Self {
        Region {
            name,
            lwlock_tranche,
            words,
            create,
            header: AtomicPtr::new(ptr::null_mut()),
            word_count: AtomicUsize::new(0),
        }
    }

    /// Reserves the region and its lock while the library is being preloaded (from
    /// `_PG_init`); otherwise does nothing, and [`Self::get`] stays `None`.
    pub fn request(&'static self) {
        if !settings::loading_shared_preload_libraries() {
            return;
        }
        let first = {
            let mut requested = REQUESTED
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            requested.push(self);
            requested.len() == 1
        };
        // SAFETY: _PG_init runs once per process, before any hook is called; the hooks it
        // replaces are kept in this module's statics and called first by ours.
        let hooked = unsafe {
            if first {
                PREVIOUS_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
                pg_sys::shmem_startup_hook = Some(on_shmem_startup);
                HOOKED_REQUEST = compat::install_shmem_request_hook(
                    on_shmem_request,
                    &raw mut PREVIOUS_SHMEM_REQUEST,
                );
            }
            HOOKED_REQUEST
        };
        if !hooked {
            // No request hook (14): asked for now, while preloading.
            self.reserve();
        }
    }

    /// The header and the words, once this process has found the region.
    pub fn get(&self) -> Option<(&'static H, &'static [AtomicU64])> {
        let header = self.header.load(Ordering::Acquire);
        if header.is_null() {
            return None;
        }
        let words = self.word_count.load(Ordering::Relaxed);
        // SAFETY: `attach` stored a header it created or found at the start of a region of
        // `bytes(words)` bytes, which stays mapped for the life of the process (the
        // postmaster re-attaches, replacing both, after a crash restart); the words follow
        // the header, aligned to 64. `H` is valid for any bytes (the contract of `new`).
        unsafe {
            let first = header
                .cast::<u8>()
                .add(header_bytes::<H>())
                .cast::<AtomicU64>();
            Some((&*header, std::slice::from_raw_parts(first, words)))
        }
    }

    fn bytes(&self) -> usize {
        header_bytes::<H>() + (self.words)() * 8 + 64
    }
}

/// The header's size, up to the next cache line.
fn header_bytes<H>() -> usize {
    std::mem::size_of::<H>().next_multiple_of(64)
}

/// What the hooks do for a region, whatever its header type.
trait Requested: Sync {
    fn reserve(&self);
    fn attach(&self);
}

impl<H: Sync + 'static> Requested for Region<H> {
    fn reserve(&self) {
        // SAFETY: called from the shmem request hook (or, on 14, from _PG_init while
        // preloading), where add-ins may ask for shared memory and LWLock tranches.
        unsafe {
            pg_sys::RequestAddinShmemSpace(self.bytes());
            pg_sys::RequestNamedLWLockTranche(self.lwlock_tranche.as_ptr(), 1);
        }
    }

    fn attach(&self) {
        let bytes = self.bytes();
        // SAFETY: the shmem startup hook runs once shared memory exists.
        let init_lock = unsafe { LwLock::addin_shmem_init() };
        let _held = init_lock.lock_exclusive();
        let mut found = false;
        // SAFETY: under AddinShmemInitLock, as add-ins must; the name is NUL-terminated.
        // It raises an error, never returns null, when the memory is short, and when a region
        // of that name has another size.
        let base = unsafe { pg_sys::ShmemInitStruct(self.name.as_ptr(), bytes, &mut found) };
        let base = base.cast::<u8>();
        // SAFETY: the region has 64 bytes to spare for starting the header on a cache line.
        let header = unsafe { base.add(base.align_offset(64)) }.cast::<H>();
        if !found {
            // SAFETY: just created, `bytes` long, and nobody else's yet: we hold
            // AddinShmemInitLock, which whoever else finds it takes first. The header is
            // aligned and fits (`bytes` counts it); the tranche was requested in `reserve`.
            unsafe {
                ptr::write_bytes(base, 0, bytes);
                header.write((self.create)(LwLock::first_of_tranche(self.lwlock_tranche)));
            }
        }
        self.word_count.store((self.words)(), Ordering::Relaxed);
        self.header.store(header, Ordering::Release);
    }
}

/// The regions the hooks serve.
static REQUESTED: Mutex<Vec<&'static dyn Requested>> = Mutex::new(Vec::new());

fn requested() -> Vec<&'static dyn Requested> {
    REQUESTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Whether requests wait for the request hook (15 on).
static mut HOOKED_REQUEST: bool = false;
static mut PREVIOUS_SHMEM_REQUEST: Option<unsafe extern "C-unwind" fn()> = None;
static mut PREVIOUS_SHMEM_STARTUP: Option<unsafe extern "C-unwind" fn()> = None;

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_request() {
    // SAFETY: set once in `request`, before this hook could run; the hook we replaced.
    if let Some(previous) = unsafe { PREVIOUS_SHMEM_REQUEST } {
        // SAFETY: PostgreSQL's hook contract: call the previous hook first.
        unsafe { previous() };
    }
    for region in requested() {
        region.reserve();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_startup() {
    // SAFETY: as in `on_shmem_request`.
    if let Some(previous) = unsafe { PREVIOUS_SHMEM_STARTUP } {
        // SAFETY: as in `on_shmem_request`.
        unsafe { previous() };
    }
    for region in requested() {
        region.attach();
    }
}

/// Two 64-bit values from the server's cryptographically strong source, for keys of what is
/// kept in shared memory; `None` when it has none.
pub fn strong_random_seed() -> Option<[u64; 2]> {
    let mut seed = [0u64; 2];
    // SAFETY: writes exactly `size_of_val(&seed)` bytes into `seed`.
    let ok =
        unsafe { pg_sys::pg_strong_random(seed.as_mut_ptr().cast(), std::mem::size_of_val(&seed)) };
    ok.then_some(seed)
}
