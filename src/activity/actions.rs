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

/// The `activity_detected` rows of the rules that fired on `event`; the row of a rule whose
/// action notifies also holds its notification (`notify`), sent once the row is recorded
/// ([`record_and_notify`]).
pub fn events(event: &Event<'_>, fired: &[Fired]) -> Vec<Value> {
    let user_id = (!event.user_id.is_empty()).then_some(event.user_id);
    let session_id = event
        .session
        .as_ref()
        .map(crate::sessions::access_token::uuid_text);
    fired
        .iter()
        .map(|fired| {
            json!({
                "event": audit::event::ACTIVITY_DETECTED,
                "user_id": user_id,
                "issuer": event.issuer,
                "session_id": session_id,
                "ip": event.ip.map(|ip| ip.to_string()),
                "user_agent": event.user_agent,
                "details": {
                    "rule": fired.rule,
                    "action": fired.action.name(),
                    "on": event.kind,
                    "signal": fired.signal,
                },
                // Any role can LISTEN on any channel: the payload names the event, the user
                // and the session, not the address or the device — those are read from
                // auth.audit_events by its id.
                "notify": fired.action.notifies().then(|| json!({
                    "rule": fired.rule,
                    "action": fired.action.name(),
                    "event": event.kind,
                    "user_id": user_id,
                    "issuer": event.issuer,
                    "session_id": session_id,
                    "at": crate::pg::clock::now_unix_micros() as f64 / 1e6,
                })),
            })
        })
        .collect()
}

/// Records the events of the rules that fired, and sends their notifications, in the
/// caller's transaction.
pub fn record(event: &Event<'_>, fired: &[Fired]) {
    for row in events(event, fired) {
        record_and_notify(&row, None);
    }
}

/// Records one row of [`events`] (by `by`; `None`: the current user) and sends its
/// notification, naming the recorded event's id.
pub fn record_and_notify(row: &Value, by: Option<pgrx::pg_sys::Oid>) {
    let id = audit::record_row(row, by);
    if let Value::Object(payload) = &row["notify"] {
        let mut payload = payload.clone();
        payload.insert("audit_event_id".into(), json!(id));
        notify(&Value::Object(payload).to_string());
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
