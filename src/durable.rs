//! Writes that must survive the error that reports them.
//!
//! A theft verdict, a rule that revokes a session and a rule that fires on failures all end
//! in an ERROR, and the ERROR rolls back the caller's transaction — with any write it made
//! (GoTrue lost its revocation this way once). So these writes are made by a background
//! worker in transactions of its own. The caller hands it the whole request in a dynamic
//! shared memory segment (any size; the worker destroys it once read), then:
//!
//! 1. the worker revokes the session's id (`auth.revoked_sessions`), if one is to end, which
//!    refuses the session's refreshes and access tokens in every backend from their next
//!    statement — in a transaction of its own, which nothing else can roll back. The
//!    revocation takes no lock on the session row, and the worker waits as long as any lock
//!    it needs is held (no lock or statement timeout): a thief who keeps the session row, or
//!    even the revocation row, locked only delays the ending until their transaction ends;
//! 2. it records the events and sends their notifications;
//! 3. then it marks the session row ended — waiting, if need be, for the transaction that
//!    holds the row (the caller's own, when it refreshed the session earlier) to end.
//!
//! When a session ends, the caller waits (at most [`CONFIRM_WITHIN`]) until step 1 is
//! committed, checked under a fresh snapshot, and raises in any case. The worker needs a free
//! `max_worker_processes` slot: the caller retries the start for [`START_WITHIN`]; without
//! one the writes are lost and a WARNING says so (keep a slot to spare).

use std::time::{Duration, Instant};

use pg_session_auth_core::identity::parse_uuid;
use pgrx::pg_sys;
use serde_json::{json, Value};

use crate::pg::bgworker::{self, Worker};
use crate::pg::owner_spi::{self, text_arg, uuid_arg};
use crate::pg::{dsm, locks};
use crate::sessions::access_token::uuid_text;
use crate::sessions::SESSIONS_TABLE;

const WORKER: Worker<'static> = Worker {
    name: "pg_session_auth independent write",
    worker_type: "pg_session_auth independent write",
    library: "pg_session_auth",
    function: "pg_session_auth_write_independently",
};

/// How long the caller keeps trying to start the worker.
const START_WITHIN: Duration = Duration::from_secs(2);
/// How long the caller waits for a session's ending to be committed before it raises anyway.
const CONFIRM_WITHIN: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

fn pause(interval: Duration) {
    std::thread::sleep(interval);
    pgrx::check_for_interrupts!();
}

/// A session to end, and the event that says why.
pub struct Ending {
    pub session: [u8; 16],
    /// `auth.sessions.end_reason` and the revocation's reason.
    pub reason: &'static str,
    /// The audit event recorded about it, with what the caller presented.
    pub event: &'static str,
    pub details: Value,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// What the worker writes.
#[derive(Default)]
pub struct Writes {
    pub ending: Option<Ending>,
    /// `activity_detected` rows, each with its notification (`activity::actions::events`).
    pub events: Vec<Value>,
}

impl Writes {
    fn is_empty(&self) -> bool {
        self.ending.is_none() && self.events.is_empty()
    }

    fn to_json(&self) -> Value {
        json!({
            "ending": self.ending.as_ref().map(|ending| json!({
                "session": uuid_text(&ending.session),
                "reason": ending.reason,
                "event": ending.event,
                "details": ending.details,
                "ip": ending.ip,
                "user_agent": ending.user_agent,
            })),
            "by": crate::pg::roles::current_user().to_u32(),
            "events": self.events,
        })
    }
}

/// Has `writes` made in transactions of their own. When a session is to end, waits until its
/// revocation is committed and returns whether it was; otherwise returns once the worker is
/// started (false when none could be).
pub fn write_independently(writes: Writes) -> bool {
    if writes.is_empty() {
        return true;
    }
    let session = writes.ending.as_ref().map(|ending| ending.session);
    let Some(handle) = dsm::hand_over(writes.to_json().to_string().as_bytes()) else {
        pgrx::warning!(
            "pg_session_auth: no dynamic shared memory segment for an independent write: it is lost"
        );
        return false;
    };
    let extra = format!("{handle}");
    let database = locks::my_database();
    let started_by = Instant::now() + START_WITHIN;
    let started = loop {
        if WORKER.start_with_extra(database, &extra) {
            break true;
        }
        if Instant::now() >= started_by {
            break false;
        }
        pause(Duration::from_millis(100));
    };
    if !started {
        dsm::discard(handle);
        pgrx::warning!(
            "pg_session_auth: no background worker could be started (max_worker_processes): a session ending or activity event is lost"
        );
        return false;
    }
    let Some(session) = session else {
        return true;
    };
    let confirmed_by = Instant::now() + CONFIRM_WITHIN;
    loop {
        if is_ended(session) {
            return true;
        }
        if Instant::now() >= confirmed_by {
            break;
        }
        pause(POLL);
    }
    pgrx::warning!(
        "pg_session_auth: the session's ending waits for a lock; it commits once that is released"
    );
    false
}

/// Whether `session` has ended (or its id is revoked), as committed now.
fn is_ended(session: [u8; 16]) -> bool {
    let Some((_, owner)) = owner_spi::relation_and_owner(SESSIONS_TABLE) else {
        return false;
    };
    let rows = owner_spi::select(
        Some(owner),
        include_str!("queries/session_ended.sql"),
        &[uuid_arg(Some(session))],
        |row| row.get::<bool>(0),
    );
    rows.first() == Some(&Some(true))
}

/// The worker: makes the writes handed to it (its `extra` names the segment) in the database
/// of its argument.
#[pgrx::pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_session_auth_write_independently(argument: pg_sys::Datum) {
    bgworker::die_on_sigterm();
    bgworker::override_settings(&[(c"lock_timeout", c"0"), (c"statement_timeout", c"0")]);
    let database = bgworker::database_of(argument);
    let Some(bytes) = bgworker::extra().trim().parse().ok().and_then(dsm::take) else {
        return;
    };
    let Ok(writes) = serde_json::from_slice::<Value>(&bytes) else {
        return;
    };
    let by = writes["by"]
        .as_u64()
        .and_then(|oid| u32::try_from(oid).ok());
    let ending = writes["ending"].clone();
    let session = ending["session"].as_str().and_then(parse_uuid);
    let reason = ending["reason"].as_str().unwrap_or_default().to_owned();
    // 1. The revocation alone, so that nothing else can make it roll back.
    bgworker::in_database(database, move || {
        if let Some(session) = session {
            crate::api::revocation::revoke_session_id(session, &reason);
        }
    });
    // 2. The events and their notifications.
    let recorded = writes.clone();
    bgworker::in_transaction(move || {
        let by = by.map(pg_sys::Oid::from);
        if let Some(session) = session {
            let ending = &recorded["ending"];
            crate::audit::record_presented(
                crate::audit::event::named(ending["event"].as_str().unwrap_or_default()),
                session,
                crate::audit::Presented {
                    ip: ending["ip"]
                        .as_str()
                        .map(|ip| pgrx::Inet(ip.to_owned()))
                        .as_ref(),
                    user_agent: ending["user_agent"].as_str(),
                    by,
                },
                ending["details"].clone(),
            );
        }
        for event in recorded["events"].as_array().into_iter().flatten() {
            crate::activity::actions::record_and_notify(event, by);
        }
    });
    crate::pg::compat::deliver_notifications_sent_by_worker();
    let Some(session) = session else {
        return;
    };
    let reason = ending["reason"].as_str().unwrap_or_default().to_owned();
    bgworker::in_transaction(move || {
        if let Some((_, owner)) = owner_spi::relation_and_owner(SESSIONS_TABLE) {
            owner_spi::execute(
                owner,
                include_str!("queries/session_mark_ended.sql"),
                &[uuid_arg(Some(session)), text_arg(&reason)],
            );
        }
    });
}
