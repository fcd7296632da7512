//! `auth.stats()`: what the extension counted — verifications, rejections by reason, cache
//! and revocation filter hits and misses, sessions, rule firings.
//!
//! A count is one relaxed atomic add to the stripe of this backend (see `memory.rs`); reading
//! sums the stripes. Without `shared_preload_libraries` the counts are this backend's own.

use std::sync::atomic::Ordering;

use crate::activity::memory::{self, STRIPES, STRIPE_WORDS};
use crate::activity::rules::BUILT_IN_RULES;
use crate::cache::Source;
use crate::gucs;
use crate::pg::locks;

/// Why a token is refused, as `invalid token: <reason>` says it (`Rejection::reason`), and
/// why no token can be accepted.
pub const TOKEN_REASONS: [&str; 19] = [
    "malformed",
    "too large",
    "unsupported algorithm",
    "unknown key",
    "retired key",
    "algorithm mismatch",
    "forbidden header",
    "bad signature",
    "expired",
    "not yet valid",
    "issued in the future",
    "wrong issuer",
    "wrong audience",
    "missing claim",
    "invalid claim type",
    "role not allowed",
    "lifetime too long",
    "revoked",
    "no key configured",
];

/// Why a refresh is refused (`sessions::refusal`); the first is an invalid token.
pub const REFRESH_REASONS: [&str; 6] = [
    crate::sessions::refusal::INVALID,
    crate::sessions::refusal::EXPIRED,
    crate::sessions::refusal::TIMED_OUT,
    crate::sessions::refusal::ENDED,
    crate::sessions::refusal::REUSED,
    crate::sessions::refusal::UNUSUAL_ACTIVITY,
];
/// Their counters' names.
const REFRESH_REASON_NAMES: [&str; 6] = [
    "invalid_refresh_token",
    "session_expired",
    "session_timed_out",
    "session_ended",
    "refresh_token_reused",
    "unusual_activity",
];

/// A counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    Verifications,
    Rejections,
    /// Index into [`TOKEN_REASONS`].
    Rejected(usize),
    /// Index into [`REFRESH_REASONS`].
    RefreshRefused(usize),
    CacheHit(Source),
    CacheMiss(Source),
    FilterHit,
    FilterMiss,
    SessionsCreated,
    SessionsRefreshed,
    SessionsEnded,
    /// Index into [`BUILT_IN_RULES`].
    RuleFired(usize),
    CustomRuleFired,
}

const CACHES: [(Source, &str); 4] = [
    (Source::Keyring, "keyring_cache"),
    (Source::Revocations, "revocation_cache"),
    (Source::SigningKeys, "signing_key_cache"),
    (Source::ActivityRules, "activity_rules_cache"),
];

/// Every counter, in the order `auth.stats()` lists them.
fn all() -> Vec<(Stat, String)> {
    let underscored = |text: &str| text.replace(' ', "_");
    let mut all = vec![
        (Stat::Verifications, "verifications".to_owned()),
        (Stat::Rejections, "rejections".to_owned()),
    ];
    for (index, reason) in TOKEN_REASONS.iter().enumerate() {
        all.push((
            Stat::Rejected(index),
            format!("rejected.{}", underscored(reason)),
        ));
    }
    for (index, name) in REFRESH_REASON_NAMES.iter().enumerate() {
        all.push((
            Stat::RefreshRefused(index),
            format!("refresh_refused.{name}"),
        ));
    }
    for (source, name) in CACHES {
        all.push((Stat::CacheHit(source), format!("{name}.hits")));
        all.push((Stat::CacheMiss(source), format!("{name}.misses")));
    }
    all.push((Stat::FilterHit, "revocation_filter.hits".to_owned()));
    all.push((Stat::FilterMiss, "revocation_filter.misses".to_owned()));
    all.push((Stat::SessionsCreated, "sessions.created".to_owned()));
    all.push((Stat::SessionsRefreshed, "sessions.refreshed".to_owned()));
    all.push((Stat::SessionsEnded, "sessions.ended".to_owned()));
    for (index, rule) in BUILT_IN_RULES.iter().enumerate() {
        all.push((Stat::RuleFired(index), format!("rules.{rule}")));
    }
    all.push((Stat::CustomRuleFired, "rules.custom".to_owned()));
    all
}

impl Stat {
    /// Its word in a stripe.
    fn index(self) -> usize {
        let after_reasons = 2 + TOKEN_REASONS.len() + REFRESH_REASONS.len();
        let cache = |source: Source| {
            CACHES
                .iter()
                .position(|(cached, _)| *cached == source)
                .unwrap_or(0)
        };
        let after_caches = after_reasons + 2 * CACHES.len();
        match self {
            Stat::Verifications => 0,
            Stat::Rejections => 1,
            Stat::Rejected(index) => 2 + index,
            Stat::RefreshRefused(index) => 2 + TOKEN_REASONS.len() + index,
            Stat::CacheHit(source) => after_reasons + 2 * cache(source),
            Stat::CacheMiss(source) => after_reasons + 2 * cache(source) + 1,
            Stat::FilterHit => after_caches,
            Stat::FilterMiss => after_caches + 1,
            Stat::SessionsCreated => after_caches + 2,
            Stat::SessionsRefreshed => after_caches + 3,
            Stat::SessionsEnded => after_caches + 4,
            Stat::RuleFired(index) => after_caches + 5 + index,
            Stat::CustomRuleFired => after_caches + 5 + BUILT_IN_RULES.len(),
        }
    }
}

/// Counts one `stat` (unless `pg_session_auth.track_activity` is off).
pub fn count(stat: Stat) {
    add(stat, 1);
}

/// Counts `n` of `stat`.
pub fn add(stat: Stat, n: u64) {
    if n == 0 || !gucs::track_activity() {
        return;
    }
    let stripe = my_stripe();
    memory::memory()
        .counter(stripe, stat.index())
        .fetch_add(n, Ordering::Relaxed);
}

fn my_stripe() -> usize {
    thread_local! {
        static STRIPE: usize = locks::my_pid().unsigned_abs() as usize % STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

/// Every counter's name and value, after `cluster_wide` (1: the cluster's counts, the library
/// being preloaded; 0: this backend's).
pub fn snapshot() -> Vec<(String, i64)> {
    let memory = memory::memory();
    let scope = ("cluster_wide".to_owned(), i64::from(memory.cluster_wide));
    std::iter::once(scope)
        .chain(all().into_iter().map(|(stat, name)| {
            let total = (0..STRIPES)
                .map(|stripe| memory::load(memory.counter(stripe, stat.index())))
                .fold(0u64, u64::wrapping_add);
            (name, i64::try_from(total).unwrap_or(i64::MAX))
        }))
        .collect()
}

/// Zeroes every counter.
pub fn reset() {
    let memory = memory::memory();
    for stripe in 0..STRIPES {
        for index in 0..STRIPE_WORDS {
            memory.counter(stripe, index).store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(feature = "pg_test")]
pub fn names() -> Vec<String> {
    all().into_iter().map(|(_, name)| name).collect()
}

/// Every counter has a word of its own in a stripe.
#[cfg(feature = "pg_test")]
pub fn indices_are_distinct_and_fit() -> bool {
    let mut seen: Vec<usize> = all().iter().map(|(stat, _)| stat.index()).collect();
    let count = seen.len();
    seen.sort_unstable();
    seen.dedup();
    seen.len() == count && seen.iter().all(|index| *index < STRIPE_WORDS)
}
