//! The trigger that keeps every backend's caches of the extension's tables current.

use pgrx::prelude::*;

use crate::pg::invalidation::invalidate_relation;

/// Statement-level trigger on the extension's state tables: tells every backend to drop what
/// it cached from them once this transaction commits (see `cache.rs`).
#[pg_trigger]
fn invalidate_cached_state<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    invalidate_relation(trigger.relid()?);
    Ok(None)
}
