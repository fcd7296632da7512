//! What the rules that fired do: record `activity_detected` events, notify, ask the session
//! to step up, or end it.
//!
//! Each action includes the ones before it (`core::activity::Action`). A sign-in or refresh
//! that only logs, notifies or steps up goes on: its events and notifications are written in
//! the caller's transaction and take effect when it commits. One that revokes is refused,
//! so its writes go through `durable.rs` and persist although the refusal rolls back.

use serde_json::{json, Value};

use pg_session_auth_core::activity::Action;

use crate::activity::rules::{Event, Fired};
use crate::audit;
use crate::pg::owner_spi::{self, text_arg};

/// The channel of notifications.
pub const CHANNEL: &str = "pg_session_auth_activity";

/// The strongest action of the rules that fired.
pub fn strongest(fired: &[Fired]) -> Option<Action> {
    fired.iter().map(|fired| fired.action).max()
}

/// The rules that fired, for the event that triggered them (`details.flagged`).
pub fn flagged(fired: &[Fired]) -> Vec<&str> {
    fired.iter().map(|fired| fired.rule.as_str()).collect()
}

/// The `activity_detected` rows of the rules that fired on `event`.
pub fn events(event: &Event<'_>, fired: &[Fired]) -> Vec<Value> {
    fired
        .iter()
        .map(|fired| {
            json!({
                "event": audit::event::ACTIVITY_DETECTED,
                "user_id": (!event.user_id.is_empty()).then_some(event.user_id),
                "issuer": event.issuer,
                "session_id": event.session.as_ref().map(crate::sessions::access_token::uuid_text),
                "ip": event.ip.map(|ip| ip.to_string()),
                "user_agent": event.user_agent,
                "details": {
                    "rule": fired.rule,
                    "action": fired.action.name(),
                    "on": event.kind,
                    "signal": fired.signal,
                },
            })
        })
        .collect()
}

/// The notifications of the rules that fired on `event` with an action that notifies.
pub fn notifications(event: &Event<'_>, fired: &[Fired]) -> Vec<String> {
    fired
        .iter()
        .filter(|fired| fired.action.notifies())
        .map(|fired| {
            json!({
                "rule": fired.rule,
                "action": fired.action.name(),
                "event": event.kind,
                "user_id": (!event.user_id.is_empty()).then_some(event.user_id),
                "issuer": event.issuer,
                "session_id": event.session.as_ref().map(crate::sessions::access_token::uuid_text),
                "ip": event.ip.map(|ip| ip.to_string()),
                "user_agent": event.user_agent,
                "at": crate::pg::clock::now_unix_micros() as f64 / 1e6,
                "signal": fired.signal,
            })
            .to_string()
        })
        .collect()
}

/// Records the events and sends the notifications of the rules that fired, in the caller's
/// transaction.
pub fn record(event: &Event<'_>, fired: &[Fired]) {
    for row in events(event, fired) {
        audit::record_row(&row, None);
    }
    for payload in notifications(event, fired) {
        notify(&payload);
    }
}

/// `pg_notify` on [`CHANNEL`]; delivered when the transaction commits.
pub fn notify(payload: &str) {
    let Some((_, owner)) = owner_spi::relation_and_owner(crate::activity::rules::RULES_TABLE)
    else {
        return;
    };
    owner_spi::execute(
        owner,
        "select pg_catalog.pg_notify($1, $2)",
        &[text_arg(CHANNEL), text_arg(payload)],
    );
}
