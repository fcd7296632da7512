//! Every difference between the PostgreSQL majors pg_session_auth supports (14 to 18) that the
//! code has to know about. Nothing outside this module tests a `pgNN` feature.

use pgrx::pg_sys;

/// Registers `request` to ask for shared memory and LWLocks, and returns true; PostgreSQL 15
/// added `shmem_request_hook`, the only place allowed to ask from 15 on. On 14 there is no
/// such hook: returns false, and the caller asks directly while `shared_preload_libraries`
/// are loaded (from `_PG_init`).
///
/// # Safety
/// Called once, from `_PG_init` while shared_preload_libraries are being processed;
/// `previous` points at the caller's static that keeps the hook it replaces.
#[allow(unused_variables)]
pub unsafe fn install_shmem_request_hook(
    request: unsafe extern "C-unwind" fn(),
    previous: *mut Option<unsafe extern "C-unwind" fn()>,
) -> bool {
    #[cfg(feature = "pg14")]
    return false;
    #[cfg(not(feature = "pg14"))]
    // SAFETY: the hook is a process-global the postmaster calls once, after _PG_init.
    unsafe {
        *previous = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(request);
        true
    }
}

#[cfg(feature = "pg14")]
extern "C-unwind" {
    fn ProcessCompletedNotifies();
}

/// After a background worker committed a transaction that sent notifications: on 14 they
/// reach the listeners only through `ProcessCompletedNotifies` (which ordinary backends call
/// in their main loop); from 15 on the commit itself signals the listeners.
pub fn deliver_notifications_sent_by_worker() {
    #[cfg(feature = "pg14")]
    // SAFETY: called outside any transaction, after the commit, as a worker must.
    unsafe {
        ProcessCompletedNotifies()
    };
}

/// Whether this backend holds `mode` on the lock `tag` (exactly that mode).
pub fn lock_held_by_me(tag: &pg_sys::LOCKTAG, mode: pg_sys::LOCKMODE) -> bool {
    // SAFETY: reads this backend's local lock table.
    unsafe {
        #[cfg(any(feature = "pg14", feature = "pg15", feature = "pg16"))]
        return pg_sys::LockHeldByMe(tag, mode);
        #[cfg(not(any(feature = "pg14", feature = "pg15", feature = "pg16")))]
        return pg_sys::LockHeldByMe(tag, mode, false);
    }
}

/// Installs a signal handler (PostgreSQL 18 renamed the backend's `pqsignal`).
///
/// # Safety
/// `handler` must be async-signal-safe, as PostgreSQL's own handlers are.
pub unsafe fn set_signal_handler(signal: i32, handler: pg_sys::pqsigfunc) {
    #[cfg(not(feature = "pg18"))]
    // SAFETY: the caller's contract.
    unsafe {
        pg_sys::pqsignal(signal, handler)
    };
    #[cfg(feature = "pg18")]
    // SAFETY: the caller's contract.
    unsafe {
        pg_sys::pqsignal_be(signal, handler)
    };
}

/// Whether `member` may `SET ROLE` to `role`. From 16 on that needs the grant's SET option
/// (`member_can_set_role`); before, membership.
pub fn can_set_role(member: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups through the role caches.
    unsafe {
        #[cfg(any(feature = "pg14", feature = "pg15"))]
        return pg_sys::is_member_of_role(member, role);
        #[cfg(not(any(feature = "pg14", feature = "pg15")))]
        return pg_sys::member_can_set_role(member, role);
    }
}
