//! Ending a session so that it stays ended although the caller's transaction rolls back.
//!
//! A theft verdict raises `28000`, and the raise rolls back the caller's transaction — with
//! any write it made (GoTrue lost its revocation this way once). So the ending is written by
//! a background worker in transactions of its own:
//!
//! 1. it revokes the session's id (`auth.revoked_sessions`), which refuses the session's
//!    refreshes and access tokens in every backend from their next statement. This write
//!    takes no lock on the session row, and the worker waits as long as any lock it needs is
//!    held (no lock or statement timeout): a thief who keeps the session row, or even the
//!    revocation row, locked only delays the ending until their transaction ends;
//! 2. then it marks the session row ended — waiting, if need be, for the transaction that
//!    holds the row (the caller's own, when it refreshed the session earlier) to end.
//!
//! The caller waits (at most [`CONFIRM_WITHIN`]) until step 1 is committed, checked under a
//! fresh snapshot, and raises in any case. The worker needs a free `max_worker_processes`
//! slot: the caller retries the start for [`START_WITHIN`]; without one the ending is lost
//! and a WARNING says so (keep a slot to spare).

use std::time::{Duration, Instant};

use pg_session_auth_core::identity::parse_uuid;
use pgrx::pg_sys;

use super::SESSIONS_TABLE;
use crate::pg::bgworker::{self, Worker};
use crate::pg::locks;
use crate::pg::owner_spi::{self, text_arg, uuid_arg};

const ENDING_WORKER: Worker<'static> = Worker {
    name: "pg_session_auth session ending",
    worker_type: "pg_session_auth session ending",
    library: "pg_session_auth",
    function: "pg_session_auth_end_session",
};

/// How long the caller keeps trying to start the worker.
const START_WITHIN: Duration = Duration::from_secs(2);
/// How long the caller waits for the revocation to be committed before it raises anyway.
const CONFIRM_WITHIN: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

fn pause(interval: Duration) {
    std::thread::sleep(interval);
    pgrx::check_for_interrupts!();
}

/// Who presented the stolen token: their address, user agent and role, for the audit trail.
pub struct Presenter<'a> {
    pub ip: Option<&'a pgrx::Inet>,
    pub user_agent: Option<&'a str>,
}

/// The worker's `extra` (at most 127 bytes): the session, the presenter's role and address,
/// and as much of their user agent as fits.
fn extra(session: [u8; 16], presenter: &Presenter<'_>) -> String {
    let mut extra = format!(
        "{}\n{}\n{}\n",
        super::access_token::uuid_text(&session),
        crate::pg::roles::current_user().to_u32(),
        presenter.ip.map_or("", |ip| ip.0.as_str()),
    );
    for character in presenter.user_agent.unwrap_or_default().chars() {
        if extra.len() + character.len_utf8() > 127 || character == '\n' {
            break;
        }
        extra.push(character);
    }
    extra
}

/// Ends `session` on theft in transactions of its own; true once that is committed.
pub fn end_independently(session: [u8; 16], presenter: &Presenter<'_>) -> bool {
    let extra = extra(session, presenter);
    let database = locks::my_database();
    let started_by = Instant::now() + START_WITHIN;
    let started = loop {
        if ENDING_WORKER.start_with_extra(database, &extra) {
            break true;
        }
        if Instant::now() >= started_by {
            break false;
        }
        pause(Duration::from_millis(100));
    };
    let confirmed_by = Instant::now() + CONFIRM_WITHIN;
    loop {
        if is_ended(session) {
            return true;
        }
        if !started || Instant::now() >= confirmed_by {
            break;
        }
        pause(POLL);
    }
    if started {
        pgrx::warning!(
            "pg_session_auth: the session's ending waits for a lock; it commits once that is released"
        );
    } else {
        pgrx::warning!(
            "pg_session_auth: no background worker could be started (max_worker_processes): the session could not be ended"
        );
    }
    false
}

/// Whether `session` has ended (or its id is revoked), as committed now.
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
    bgworker::override_settings(&[(c"lock_timeout", c"0"), (c"statement_timeout", c"0")]);
    let database = bgworker::database_of(argument);
    let mut fields = bgworker::extra().splitn(4, '\n');
    let Some(id) = fields.next().and_then(parse_uuid) else {
        return;
    };
    let by = fields
        .next()
        .and_then(|oid| oid.parse::<u32>().ok())
        .map(pg_sys::Oid::from);
    let ip = fields
        .next()
        .filter(|ip| !ip.is_empty())
        .map(|ip| pgrx::Inet(ip.to_owned()));
    let user_agent = fields
        .next()
        .filter(|agent| !agent.is_empty())
        .map(str::to_owned);
    let reason = super::refusal::REUSED;
    bgworker::in_database(database, move || {
        crate::api::revocation::revoke_session_id(id, reason);
        crate::audit::record_presented(
            crate::audit::event::REFRESH_TOKEN_REUSED,
            id,
            crate::audit::Presented {
                ip: ip.as_ref(),
                user_agent: user_agent.as_deref(),
                by,
            },
            serde_json::json!({ "cause": "theft", "session_ended": true }),
        );
    });
    bgworker::in_transaction(move || {
        if let Some((_, owner)) = owner_spi::relation_and_owner(SESSIONS_TABLE) {
            owner_spi::execute(
                owner,
                include_str!("../queries/session_mark_ended.sql"),
                &[uuid_arg(Some(id)), text_arg(reason)],
            );
        }
    });
}
