//! The audit trail as SQL sees it: admins read `auth.audit_events`; a user reads their own
//! events through `auth.my_activity()`; admins purge by the retention setting.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::{Inet, JsonB, Uuid};

use crate::errors::{raise, required, Failure};
use crate::identity::current_claims;
use crate::{audit, gucs};

/// `auth.my_activity(max_events)`: the authenticated user's latest events — sign-ins with
/// device and network, refreshes, reuse, sign-outs, revocations — newest first.
#[pg_extern(stable, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn my_activity(
    max_events: default!(Option<i32>, "50"),
) -> TableIterator<
    'static,
    (
        name!(at, TimestampWithTimeZone),
        name!(event, String),
        name!(session_id, Option<Uuid>),
        name!(ip, Option<Inet>),
        name!(user_agent, Option<String>),
        name!(details, JsonB),
        name!(flagged, Vec<String>),
    ),
> {
    let max_events = required(max_events, "max_events").clamp(0, 1000);
    let own = current_claims().and_then(|claims| {
        let sub = pg_session_auth_core::identity::string_claim(&claims, "sub")?;
        let issuer = pg_session_auth_core::identity::string_claim(&claims, "iss").unwrap_or("");
        Some((
            pg_session_auth_core::identity::canonical_user_id(sub),
            issuer.to_owned(),
        ))
    });
    let Some((user_id, issuer)) = own else {
        raise(Failure::NotAuthenticated {
            function: "auth.my_activity()",
        })
    };
    TableIterator::new(
        audit::activity_of(&user_id, &issuer, max_events)
            .into_iter()
            .map(|activity| {
                let details: serde_json::Value =
                    serde_json::from_str(&activity.details).unwrap_or_default();
                let flagged = flagged(&activity.event, &details);
                (
                    activity.at,
                    activity.event,
                    activity.session_id,
                    activity.ip,
                    activity.user_agent,
                    JsonB(details),
                    flagged,
                )
            }),
    )
}

/// The rules that fired on an event: those its details name as `flagged`, or the rule of an
/// `activity_detected` event.
fn flagged(event: &str, details: &serde_json::Value) -> Vec<String> {
    if event == audit::event::ACTIVITY_DETECTED {
        return details["rule"]
            .as_str()
            .map(str::to_owned)
            .into_iter()
            .collect();
    }
    details["flagged"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.as_str().map(str::to_owned))
        .collect()
}

/// `auth.purge_audit_events()`: deletes events older than `pg_session_auth.audit_retention`;
/// returns how many. Admins only.
#[pg_extern(volatile, parallel_unsafe)]
fn purge_audit_events() -> i64 {
    audit::purge(gucs::audit_retention_seconds())
}
