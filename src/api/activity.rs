//! Unusual activity as SQL sees it: `auth.stats()`, `auth.reset_stats()` and
//! `auth.recent_rejections()`, for admins (EXECUTE is granted to `session_auth_admin` only,
//! and checked again here).

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::{Inet, Uuid};

use crate::activity::{rejections, stats};
use crate::api::revocation::caller_is_admin;
use crate::errors::{raise, Failure};
use crate::pg::clock;

fn require_admin(action: &'static str) {
    if !caller_is_admin() {
        raise(Failure::PermissionDenied {
            action,
            only_own: false,
        });
    }
}

/// `auth.stats()`: every counter — of the cluster when the library is preloaded, of this
/// backend otherwise.
#[pg_extern(volatile, parallel_safe)]
fn stats() -> TableIterator<'static, (name!(name, String), name!(value, i64))> {
    require_admin("read pg_session_auth statistics");
    TableIterator::new(stats::snapshot())
}

/// `auth.reset_stats()`: zeroes every counter.
#[pg_extern(volatile, parallel_unsafe)]
fn reset_stats() {
    require_admin("reset pg_session_auth statistics");
    stats::reset();
}

/// `auth.recent_rejections()`: the latest rejected tokens and refused refreshes in this
/// database, newest first (at most 512 of the cluster's).
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn recent_rejections() -> TableIterator<
    'static,
    (
        name!(at, TimestampWithTimeZone),
        name!(reason, String),
        name!(kid, Option<String>),
        name!(sub, Option<String>),
        name!(session_id, Option<Uuid>),
        name!(ip, Option<Inet>),
        name!(role, Option<String>),
        name!(pid, i32),
    ),
> {
    require_admin("read pg_session_auth rejections");
    TableIterator::new(rejections::recent().into_iter().map(|recent| {
        (
            clock::timestamp_from_unix_micros(recent.at),
            recent.reason.to_owned(),
            recent.kid,
            recent.sub,
            recent.session.map(Uuid::from_bytes),
            recent.ip.map(Inet),
            crate::pg::roles::role_name(recent.role),
            recent.pid,
        )
    }))
}
