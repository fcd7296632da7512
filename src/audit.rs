//! The audit trail: every committed session and key event, as a row of `auth.audit_events`.
//!
//! Events are written in the transaction they describe, so a rolled-back sign-in leaves no
//! event; the events of failures, whose record must survive their own rollback — a refresh
//! token reused after the interval (theft), a session or sign-in refused by a rule, a rule
//! that fires on failures — are recorded by a background worker (`durable.rs`). Nothing here
//! ever holds token material or a secret: events carry the subject, the session, the network
//! address, the user agent and small details.

use pgrx::{pg_sys, IntoDatum};
use serde_json::Value;

use crate::pg::owner_spi::{self, text_arg, uuid_arg};

const AUDIT_TABLE: &str = "audit_events";

/// Event names, as `auth.audit_events.event` holds them (the README lists what each means).
pub mod event {
    pub const SESSION_CREATED: &str = "session_created";
    pub const SESSION_REFRESHED: &str = "session_refreshed";
    pub const REFRESH_TOKEN_REUSED: &str = "refresh_token_reused";
    pub const SESSION_STEPPED_UP: &str = "session_stepped_up";
    pub const SIGNED_OUT: &str = "signed_out";
    pub const SESSION_REVOKED: &str = "session_revoked";
    pub const SESSION_ENDED: &str = "session_ended";
    /// Recorded by `auth.purge_sessions()` (sessions_purge.sql) for a session that expired
    /// without ending.
    #[allow(dead_code)]
    pub const SESSION_EXPIRED: &str = "session_expired";
    pub const KEY_GENERATED: &str = "key_generated";
    pub const KEY_IMPORTED: &str = "key_imported";
    pub const KEY_ROTATED: &str = "key_rotated";
    pub const KEY_REVOKED: &str = "key_revoked";
    /// A detection rule fired (`activity/`).
    pub const ACTIVITY_DETECTED: &str = "activity_detected";

    /// The event of that name (for one handed to a worker as text); unknown names are
    /// recorded as `session_ended`.
    pub fn named(name: &str) -> &'static str {
        [
            SESSION_CREATED,
            SESSION_REFRESHED,
            REFRESH_TOKEN_REUSED,
            SESSION_STEPPED_UP,
            SIGNED_OUT,
            SESSION_REVOKED,
            SESSION_ENDED,
            ACTIVITY_DETECTED,
        ]
        .into_iter()
        .find(|event| *event == name)
        .unwrap_or(SESSION_ENDED)
    }
}

/// Records `event` about no session (a key change), with `details` and `by`, the role acting.
/// A database not yet updated (no table) keeps no trail.
pub fn record(event: &'static str, details: Value) {
    let Some((_, owner)) = owner_spi::relation_and_owner(AUDIT_TABLE) else {
        return;
    };
    let by = crate::pg::roles::current_user();
    owner_spi::execute(
        owner,
        include_str!("queries/audit_record.sql"),
        &[
            text_arg(event),
            text_arg(&details.to_string()),
            (pg_sys::OIDOID, by.into_datum()),
        ],
    );
}

/// [`record_for_session`] for each of `sessions`, in one statement.
pub fn record_for_sessions(event: &'static str, sessions: &[[u8; 16]], details: Value) {
    let Some((_, owner)) = owner_spi::relation_and_owner(AUDIT_TABLE) else {
        return;
    };
    if sessions.is_empty() {
        return;
    }
    let ids: Vec<pgrx::Uuid> = sessions
        .iter()
        .map(|id| pgrx::Uuid::from_bytes(*id))
        .collect();
    owner_spi::execute(
        owner,
        include_str!("queries/audit_record_for_sessions.sql"),
        &[
            text_arg(event),
            (pg_sys::UUIDARRAYOID, ids.into_datum()),
            (
                pg_sys::OIDOID,
                crate::pg::roles::current_user().into_datum(),
            ),
            text_arg(&details.to_string()),
        ],
    );
}

/// Records a complete event row (`activity::actions::events`): its `event`, `user_id`,
/// `issuer`, `session_id`, `ip`, `user_agent` and `details`; `by` is the role acting (`None`:
/// the current user). Returns the event's id.
pub fn record_row(row: &Value, by: Option<pg_sys::Oid>) -> Option<i64> {
    let (_, owner) = owner_spi::relation_and_owner(AUDIT_TABLE)?;
    let text = |name: &str| (pg_sys::TEXTOID, row[name].as_str().into_datum());
    let session = row["session_id"]
        .as_str()
        .and_then(pg_session_auth_core::identity::parse_uuid);
    let ip = row["ip"].as_str().map(|ip| pgrx::Inet(ip.to_owned()));
    let by = by.unwrap_or_else(crate::pg::roles::current_user);
    owner_spi::modify(
        owner,
        include_str!("queries/audit_record_row.sql"),
        &[
            text("event"),
            text("user_id"),
            text("issuer"),
            uuid_arg(session),
            (pg_sys::INETOID, ip.into_datum()),
            text("user_agent"),
            text_arg(&row["details"].to_string()),
            (pg_sys::OIDOID, by.into_datum()),
        ],
        |row| row.get::<i64>(0),
    )
    .1
    .into_iter()
    .next()
    .flatten()
}

/// What the caller of an event presented: their address and user agent (`None`: the
/// session's last ones) and role (`None`: the current user).
pub struct Presented<'a> {
    pub ip: Option<&'a pgrx::Inet>,
    pub user_agent: Option<&'a str>,
    pub by: Option<pg_sys::Oid>,
}

/// Records `event` about `session`, taking its user, issuer and last address from its row;
/// `details` gain `by`, the role acting.
pub fn record_for_session(event: &'static str, session: [u8; 16], details: Value) {
    record_presented(
        event,
        session,
        Presented {
            ip: None,
            user_agent: None,
            by: None,
        },
        details,
    );
}

/// [`record_for_session`] with what the caller presented (a theft, recorded by a worker).
pub fn record_presented(
    event: &'static str,
    session: [u8; 16],
    presented: Presented<'_>,
    details: Value,
) {
    let Some((_, owner)) = owner_spi::relation_and_owner(AUDIT_TABLE) else {
        return;
    };
    let by = presented.by.unwrap_or_else(crate::pg::roles::current_user);
    owner_spi::execute(
        owner,
        include_str!("queries/audit_record_for_session.sql"),
        &[
            text_arg(event),
            uuid_arg(Some(session)),
            text_arg(&details.to_string()),
            (pg_sys::OIDOID, by.into_datum()),
            (pg_sys::INETOID, presented.ip.cloned().into_datum()),
            (pg_sys::TEXTOID, presented.user_agent.into_datum()),
        ],
    );
}

/// A row of `auth.my_activity()`.
pub struct Activity {
    pub at: pgrx::datum::TimestampWithTimeZone,
    pub event: String,
    pub session_id: Option<pgrx::Uuid>,
    pub ip: Option<pgrx::Inet>,
    pub user_agent: Option<String>,
    pub details: String,
}

/// The latest `limit` events of `user_id` at `issuer`, newest first.
pub fn activity_of(user_id: &str, issuer: &str, limit: i32) -> Vec<Activity> {
    let Some((_, owner)) = owner_spi::relation_and_owner(AUDIT_TABLE) else {
        return Vec::new();
    };
    owner_spi::select(
        Some(owner),
        include_str!("queries/audit_mine.sql"),
        &[
            text_arg(user_id),
            text_arg(issuer),
            (pg_sys::INT4OID, limit.into_datum()),
        ],
        |row| {
            Some(Activity {
                at: row.get(0)?,
                event: row.get(1)?,
                session_id: row.get(2),
                ip: row.get(3),
                user_agent: row.get(4),
                details: row.get(5).unwrap_or_else(|| "{}".to_owned()),
            })
        },
    )
    .into_iter()
    .flatten()
    .collect()
}

/// Deletes events older than `seconds`; returns how many.
pub fn purge(seconds: f64) -> i64 {
    let Some((_, owner)) = owner_spi::relation_and_owner(AUDIT_TABLE) else {
        return 0;
    };
    owner_spi::modify(
        owner,
        include_str!("queries/audit_purge.sql"),
        &[(pg_sys::FLOAT8OID, seconds.into_datum())],
        |row| row.get::<i64>(0),
    )
    .1
    .into_iter()
    .next()
    .flatten()
    .unwrap_or(0)
}
