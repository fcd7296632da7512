//! Locks, and the processes and databases around them: which relation locks this backend
//! holds, whether another backend is still alive (the process array), which database and
//! process this is, whether it runs in parallel mode or the server in recovery, and the wall
//! clock. Plain reads of server state, each a call or a global.

use pgrx::pg_sys;

use super::compat;

/// Lock modes that writing to a table takes (`INSERT`/`UPDATE`/`DELETE` take
/// `RowExclusiveLock`) or that are stronger.
const WRITE_MODES: [u32; 4] = [
    pg_sys::RowExclusiveLock,
    pg_sys::ShareRowExclusiveLock,
    pg_sys::ExclusiveLock,
    pg_sys::AccessExclusiveLock,
];

/// Whether this backend holds a lock on `relation` (of its database) in a mode that writing
/// takes, or a stronger one: whether its transaction may have written to it.
pub fn holds_write_lock(relation: pg_sys::Oid) -> bool {
    let tag = pg_sys::LOCKTAG {
        locktag_field1: my_database().to_u32(),
        locktag_field2: relation.to_u32(),
        locktag_field3: 0,
        locktag_field4: 0,
        locktag_type: pg_sys::LockTagType::LOCKTAG_RELATION as u8,
        locktag_lockmethodid: pg_sys::DEFAULT_LOCKMETHOD as u8,
    };
    WRITE_MODES
        .iter()
        .any(|mode| compat::lock_held_by_me(&tag, *mode as pg_sys::LOCKMODE))
}

/// Whether this backend is in a parallel operation (leader or worker), which may not take a
/// fresh snapshot.
pub fn in_parallel_mode() -> bool {
    // SAFETY: reads this backend's transaction state.
    unsafe { pg_sys::IsInParallelMode() }
}

/// This process's id.
pub fn my_pid() -> i32 {
    // SAFETY: a plain read of a backend-local global, set at process start.
    unsafe { pg_sys::MyProcPid }
}

/// The client's address as the server sees it (`inet_client_addr()`); `None` over a Unix
/// socket and in background processes.
pub fn client_address() -> Option<String> {
    // SAFETY: inet_client_addr takes no arguments and only reads MyProcPort.
    unsafe { pgrx::direct_function_call::<pgrx::Inet>(pg_sys::inet_client_addr, &[]) }
        .map(|inet| inet.0)
}

/// The database this backend is connected to.
pub fn my_database() -> pg_sys::Oid {
    // SAFETY: a plain read of a backend-local global, set when it connected.
    unsafe { pg_sys::MyDatabaseId }
}

/// Whether `pid` is a backend (or background worker) still in the process array.
pub fn is_live_backend(pid: i32) -> bool {
    // SAFETY: BackendPidGetProc takes ProcArrayLock itself and only compares pids; the
    // returned pointer is not dereferenced.
    pid != 0 && unsafe { !pg_sys::BackendPidGetProc(pid).is_null() }
}

/// Whether `database` still exists (the catalog, through the syscache).
pub fn database_exists(database: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup by key, inside a transaction (the callers run in one); the
    // unused keys are zero, as SearchSysCacheExists1 passes them.
    unsafe {
        pg_sys::SearchSysCacheExists(
            pg_sys::SysCacheIdentifier::DATABASEOID as i32,
            pg_sys::Datum::from(database),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        )
    }
}

/// Whether the server is in recovery (a standby, or still replaying WAL at startup).
pub fn recovery_in_progress() -> bool {
    // SAFETY: reads the shared recovery state (and caches it once recovery has ended).
    unsafe { pg_sys::RecoveryInProgress() }
}

/// Now, in microseconds since the PostgreSQL epoch (the wall clock: it may be set back).
pub fn now() -> pg_sys::TimestampTz {
    // SAFETY: reads the system clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}
