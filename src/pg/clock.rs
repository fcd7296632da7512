//! The server's clock as the checks read it: when the current statement and transaction
//! started, and the conversion between PostgreSQL timestamps and Unix seconds.

use pgrx::pg_sys;

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_UNIX_SECONDS: i64 = 946_684_800;

/// When the current statement started (the same for the whole statement; a parallel worker
/// gets its leader's).
pub fn statement_start() -> pg_sys::TimestampTz {
    // SAFETY: reads a backend-global timestamp the server sets at each statement's start;
    // it cannot fail.
    unsafe { pg_sys::GetCurrentStatementStartTimestamp() }
}

/// When the current transaction started (a parallel worker gets its leader's).
pub fn transaction_start() -> pg_sys::TimestampTz {
    // SAFETY: reads a backend-global timestamp the server sets at each transaction's start;
    // it cannot fail.
    unsafe { pg_sys::GetCurrentTransactionStartTimestamp() }
}

/// A timestamp as whole Unix seconds (rounded down).
pub fn unix_seconds(timestamp: pg_sys::TimestampTz) -> i64 {
    timestamp.div_euclid(1_000_000) + POSTGRES_EPOCH_UNIX_SECONDS
}

/// Unix seconds as a timestamp (microseconds since 2000-01-01).
pub fn from_unix_seconds(unix_seconds: f64) -> pg_sys::TimestampTz {
    ((unix_seconds - POSTGRES_EPOCH_UNIX_SECONDS as f64) * 1_000_000.0) as pg_sys::TimestampTz
}

/// A timestamp as microseconds since the Unix epoch.
pub fn unix_micros(timestamp: pg_sys::TimestampTz) -> i64 {
    timestamp.saturating_add(POSTGRES_EPOCH_UNIX_SECONDS * 1_000_000)
}

/// Now (the wall clock), in microseconds since the Unix epoch.
pub fn now_unix_micros() -> i64 {
    // SAFETY: reads the system clock.
    unix_micros(unsafe { pg_sys::GetCurrentTimestamp() })
}

/// Microseconds since the Unix epoch as a `timestamptz`.
pub fn timestamp_from_unix_micros(micros: i64) -> pgrx::datum::TimestampWithTimeZone {
    let timestamp = micros.saturating_sub(POSTGRES_EPOCH_UNIX_SECONDS * 1_000_000);
    // A value out of range cannot come from the clock; it reads as -infinity.
    pgrx::datum::TimestampWithTimeZone::try_from(timestamp)
        .unwrap_or_else(|_| pgrx::datum::TimestampWithTimeZone::negative_infinity())
}
