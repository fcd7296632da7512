//! Lightweight locks (LWLocks) in shared memory, held through a guard.

use std::ffi::CStr;

use pgrx::pg_sys;

/// An LWLock in shared memory: the first of a tranche this library asked for, or one of the
/// server's own. Only the constructors, which are unsafe, make one, so every `LwLock` points
/// at a lock that exists for as long as the shared memory does.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct LwLock(*mut pg_sys::LWLock);

// SAFETY: an LWLock is made to be used by many processes at once; the pointer to it is only
// read. (PostgreSQL code runs on one thread per process; the bounds let a structure that
// holds one sit in a `static`.)
unsafe impl Send for LwLock {}
// SAFETY: as above.
unsafe impl Sync for LwLock {}

impl LwLock {
    /// The first lock of the tranche `name`.
    ///
    /// # Safety
    /// Only after shared memory was created (from the shared memory startup hook on), by a
    /// library that asked for the tranche, with at least one lock, while it was preloaded
    /// (`RequestNamedLWLockTranche`).
    pub unsafe fn first_of_tranche(name: &CStr) -> LwLock {
        // SAFETY: the caller's contract: the tranche exists, and GetNamedLWLockTranche
        // returns its array of padded locks (it raises an error for an unknown name).
        LwLock(unsafe { &raw mut (*pg_sys::GetNamedLWLockTranche(name.as_ptr())).lock })
    }

    /// `AddinShmemInitLock`, under which add-ins create or attach their shared memory.
    ///
    /// # Safety
    /// Only once the server's shared memory exists (from the shared memory startup hook on).
    pub unsafe fn addin_shmem_init() -> LwLock {
        /// Its index in `MainLWLockArray` (`lwlocknames.txt`), the same in PostgreSQL 14
        /// to 18.
        const ADDIN_SHMEM_INIT_LOCK: usize = 21;
        // SAFETY: once shared memory exists, MainLWLockArray holds the server's individual
        // locks (more than 21 of them); the caller's contract.
        LwLock(unsafe { &raw mut (*pg_sys::MainLWLockArray.add(ADDIN_SHMEM_INIT_LOCK)).lock })
    }

    /// Waits for the lock and holds it exclusively until the guard is dropped.
    ///
    /// Nothing that can raise an error should run while it is held. Should an error or a
    /// panic unwind through the guard anyway, the guard leaves the lock to the server's
    /// error recovery (`LWLockReleaseAll`, when the transaction aborts): by then `errfinish`
    /// has reset the interrupt hold-off count that a release here would decrement.
    pub fn lock_exclusive(&self) -> LwLockGuard<'_> {
        // SAFETY: `self.0` points at an initialised LWLock in shared memory (the
        // constructors' contracts); LWLockAcquire waits for it (holding off interrupts).
        unsafe { pg_sys::LWLockAcquire(self.0, pg_sys::LWLockMode::LW_EXCLUSIVE) };
        LwLockGuard { lock: self }
    }
}

/// An LWLock held exclusively; released when dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct LwLockGuard<'l> {
    lock: &'l LwLock,
}

impl Drop for LwLockGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return; // See `lock_exclusive`.
        }
        // SAFETY: this guard acquired the lock, and nothing released it since (a release
        // by error recovery would have happened after unwinding, i.e. after this drop).
        unsafe { pg_sys::LWLockRelease(self.lock.0) };
    }
}
