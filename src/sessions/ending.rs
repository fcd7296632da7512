//! Ending a session so that it stays ended although the caller's transaction rolls back.
//!
//! A theft verdict raises `28000`, and the raise rolls back the caller's transaction — with
//! any write it made (GoTrue lost its revocation this way once). So the ending is written by
//! a background worker, in a transaction of its own, and the caller waits for the worker to
//! exit and checks, under a fresh snapshot, that the ending is committed before it raises.
//! The worker must not wait for a lock the caller holds: the caller takes the session's row
//! lock in a subtransaction and rolls that back before it starts the worker (see `mod.rs`).
//! If the caller's own transaction had already changed the session row (a refresh earlier in
//! the same transaction), the worker gives up after `lock_timeout` and the ending is lost
//! with the rollback; a WARNING says so.

use pg_session_auth_core::identity::parse_uuid;
use pgrx::pg_sys;

use super::SESSIONS_TABLE;
use crate::pg::bgworker::{self, Worker};
use crate::pg::locks;
use crate::pg::owner_spi::{self, uuid_arg};

const ENDING_WORKER: Worker<'static> = Worker {
    name: "pg_session_auth session ending",
    worker_type: "pg_session_auth session ending",
    library: "pg_session_auth",
    function: "pg_session_auth_end_session",
};

/// Ends `session` (with `reason`) in a transaction of its own; true once that is committed.
pub fn end_independently(session: [u8; 16], reason: &str) -> bool {
    let extra = format!("{}\n{reason}", super::access_token::uuid_text(&session));
    let ran = ENDING_WORKER.run_for_database(locks::my_database(), &extra);
    let ended = is_ended(session);
    if !ended {
        pgrx::warning!(
            "pg_session_auth: the session could not be ended independently of this transaction{}",
            if ran {
                ""
            } else {
                " (no background worker could be started)"
            }
        );
    }
    ended
}

/// Whether `session` has ended, as committed now.
fn is_ended(session: [u8; 16]) -> bool {
    let Some((_, owner)) = owner_spi::relation_and_owner(SESSIONS_TABLE) else {
        return false;
    };
    let rows = owner_spi::select(
        Some(owner),
        include_str!("../queries/session_ended.sql"),
        &[uuid_arg(Some(session))],
        |row| row.get::<bool>(0),
    );
    rows.first() == Some(&Some(true))
}

/// The worker: ends the session named in its `extra` in the database of its argument.
#[pgrx::pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_session_auth_end_session(argument: pg_sys::Datum) {
    bgworker::die_on_sigterm();
    bgworker::override_settings(&[(c"lock_timeout", c"5s"), (c"statement_timeout", c"10s")]);
    let database = bgworker::database_of(argument);
    let (id, reason) = bgworker::extra().split_once('\n').unwrap_or_default();
    let Some(id) = parse_uuid(id) else {
        return;
    };
    let reason = reason.to_owned();
    bgworker::in_database(database, move || {
        super::end_sessions(super::Ending::Session(id), &reason);
    });
}
