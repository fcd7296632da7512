//! Revocation checks: exact, bounded in memory, and almost free when nothing changes.
//!
//! Revocations live in `auth.revoked_sessions`, `auth.revoked_users` and
//! `auth.revoked_tokens`. A check first asks the shared revocation filter
//! (`revocation_filter.rs`, with `shared_preload_libraries`): a token none of whose keys is
//! in it is not revoked, at the cost of a few memory reads. Otherwise each backend keeps the
//! answers it has looked up (session id → revoked?, jti → revoked?, user → cut-offs), so a
//! token seen before costs hash lookups, and a token with anything not yet known costs one
//! prepared query (three index probes). Any change to those tables drops every backend's
//! answers from its next statement (see `cache.rs`), so an answer is never stale;
//! without the filter, when all three tables are empty no lookup is made at all.
//!
//! Memory bound: at most [`MAX_ANSWERS`] answers per kind, a full map being emptied before
//! the next insert, and only for keys (`jti`, `sub`) of at most [`MAX_CACHED_KEY_BYTES`]
//! bytes — longer ones are looked up every time. That bounds the maps at about 5 MB per
//! backend (`bench/revocation` measures it). The filter is in shared memory, once per
//! database, not per backend.

use std::collections::HashMap;

use pg_session_auth_core::revocation::{
    RevocationKeys, RevocationSource, UserCutoff, EVERY_ISSUER,
};
use pg_session_auth_core::Claims;
use pgrx::pg_sys;

use crate::activity::stats::{self, Stat};
use crate::cache::{self, GenerationCache, Source};
use crate::pg::owner_spi::{self, text_arg, uuid_arg};
pub mod filter;
pub mod tables;
mod written;

pub use written::{
    note_revocation_written, register_transaction_callbacks, revocation_written_in_this_transaction,
};

use filter::Screening;
use tables::{find_tables, Tables};

/// Answers kept per kind of revocation.
pub const MAX_ANSWERS: usize = 10_000;
/// Longest `jti` or `sub` whose answer is kept.
pub const MAX_CACHED_KEY_BYTES: usize = 128;

#[derive(Default)]
struct Answers {
    tables: Tables,
    /// Whether any table has rows; found out when first needed.
    any_rows: Option<bool>,
    sessions: HashMap<[u8; 16], bool>,
    tokens: HashMap<String, bool>,
    users: HashMap<String, Option<UserCutoff>>,
}

thread_local! {
    static ANSWERS: GenerationCache<Answers> = const { GenerationCache::new(Source::Revocations) };
}

fn remember<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= MAX_ANSWERS {
        map.clear();
    }
    map.insert(key, value);
}

/// Starts a fresh generation of answers.
fn fresh_answers() -> Answers {
    let tables = find_tables();
    for oid in tables.oids {
        cache::watch(oid, Source::Revocations);
    }
    Answers {
        tables,
        ..Answers::default()
    }
}

/// Whether any revocation table has a row.
fn any_rows(owner: pg_sys::Oid) -> bool {
    // Through the primary keys' indexes: a sequential scan would read every dead page a
    // purge left behind until VACUUM runs.
    let rows = owner_spi::select(
        Some(owner),
        include_str!("../queries/revocation_any_rows.sql"),
        &[],
        |row| row.get::<bool>(0),
    );
    rows.first() == Some(&Some(true))
}

/// The answers one token's check needs, for exactly the keys it was gathered for.
struct Known {
    session: bool,
    token: bool,
    /// The subject's cut-offs at every issuer, and at the token's issuer.
    user_everywhere: Option<UserCutoff>,
    user_at_issuer: Option<UserCutoff>,
}

impl RevocationSource for Known {
    fn session_revoked(&mut self, _session_id: &[u8; 16]) -> bool {
        self.session
    }

    fn token_revoked(&mut self, _jti: &str) -> bool {
        self.token
    }

    fn user_cutoff(&mut self, _user_id: &str, issuer: &str) -> Option<UserCutoff> {
        if issuer == EVERY_ISSUER {
            self.user_everywhere
        } else {
            self.user_at_issuer
        }
    }
}

/// How kept per-user answers are keyed: issuer and subject (neither holds a NUL character).
fn user_key(issuer: &str, user: &str) -> String {
    format!("{issuer}\0{user}")
}

/// The cut-off columns of a user row chosen by `$condition`, as a lateral sub-select.
/// A cut-off from the four lookup columns starting at `first`: found, revoked before,
/// others revoked before (Unix seconds), kept session.
fn cutoff_from(row: &owner_spi::Row, first: usize) -> Option<UserCutoff> {
    (row.get::<bool>(first) == Some(true)).then(|| UserCutoff {
        revoked_before: row.get::<f64>(first + 1),
        others_revoked_before: row.get::<f64>(first + 2),
        keep_session: row.get::<pgrx::Uuid>(first + 3).map(|id| *id.as_bytes()),
    })
}

impl Answers {
    /// Whether the claims fall under a revocation: the shared filter first, then (for keys
    /// it may hold) the kept answers and one lookup query.
    fn check(&mut self, claims: &Claims) -> bool {
        let tables = self.tables;
        let keys = RevocationKeys::of(claims);
        if tables.triggers_intact {
            let screening = filter::screen(&tables.incarnation(), keys.filter_keys());
            if screening == Screening::Clear {
                stats::count(Stat::FilterHit);
                return false;
            }
            stats::count(Stat::FilterMiss);
        }
        if tables.triggers_intact && !*self.any_rows.get_or_insert_with(|| any_rows(tables.owner)) {
            return false;
        }
        let mut known = self.known_for(&keys, tables);
        keys.revoked_by(&mut known)
    }

    /// The answers for `keys`: from those kept, and for whatever is missing from one query.
    fn known_for(&mut self, keys: &RevocationKeys<'_>, tables: Tables) -> Known {
        if !tables.triggers_intact {
            // Nothing would tell us when a kept answer goes stale.
            self.sessions.clear();
            self.tokens.clear();
            self.users.clear();
        }
        let everywhere_key = keys.user.as_deref().map(|u| user_key(EVERY_ISSUER, u));
        let issuer_key = keys
            .user
            .as_deref()
            .zip(keys.issuer)
            .map(|(u, issuer)| user_key(issuer, u));
        let session = keys.session.and_then(|s| self.sessions.get(&s).copied());
        let token = keys.jti.and_then(|j| self.tokens.get(j).copied());
        let everywhere = everywhere_key
            .as_ref()
            .and_then(|k| self.users.get(k).copied());
        let at_issuer = issuer_key.as_ref().and_then(|k| self.users.get(k).copied());
        let missing_session = keys.session.filter(|_| session.is_none());
        let missing_jti = keys.jti.filter(|_| token.is_none());
        let missing_everywhere = keys.user.as_deref().filter(|_| everywhere.is_none());
        let missing_at_issuer = keys
            .user
            .as_deref()
            .filter(|_| issuer_key.is_some() && at_issuer.is_none());
        let mut known = Known {
            session: session.unwrap_or(false),
            token: token.unwrap_or(false),
            user_everywhere: everywhere.flatten(),
            user_at_issuer: at_issuer.flatten(),
        };
        if missing_session.is_none()
            && missing_jti.is_none()
            && missing_everywhere.is_none()
            && missing_at_issuer.is_none()
        {
            return known;
        }
        let query = if tables.cutoffs_per_issuer {
            include_str!("../queries/revocation_lookup.sql")
        } else {
            include_str!("../queries/revocation_lookup_0.2.0.sql")
        };
        struct Found {
            session: bool,
            token: bool,
            everywhere: Option<UserCutoff>,
            at_issuer: Option<UserCutoff>,
        }
        let rows = owner_spi::select(
            Some(tables.owner),
            query,
            &[
                uuid_arg(missing_session),
                text_arg_or_null(missing_jti),
                text_arg_or_null(missing_everywhere),
                text_arg_or_null(missing_at_issuer),
                text_arg_or_null(missing_at_issuer.and(keys.issuer)),
            ],
            |row| Found {
                session: row.get::<bool>(0) == Some(true),
                token: row.get::<bool>(1) == Some(true),
                everywhere: cutoff_from(row, 2),
                at_issuer: cutoff_from(row, 6),
            },
        );
        let found = rows.into_iter().next().expect("the lookup returns one row");
        if let Some(s) = missing_session {
            known.session = found.session;
            remember(&mut self.sessions, s, known.session);
        }
        if let Some(j) = missing_jti {
            known.token = found.token;
            if j.len() <= MAX_CACHED_KEY_BYTES {
                remember(&mut self.tokens, j.to_owned(), known.token);
            }
        }
        let mut remember_user = |key: Option<String>, cutoff: Option<UserCutoff>| {
            if let Some(key) = key.filter(|k| k.len() <= MAX_CACHED_KEY_BYTES) {
                remember(&mut self.users, key, cutoff);
            }
        };
        if missing_everywhere.is_some() {
            known.user_everywhere = found.everywhere;
            remember_user(everywhere_key, known.user_everywhere);
        }
        if missing_at_issuer.is_some() {
            known.user_at_issuer = found.at_issuer;
            remember_user(issuer_key, known.user_at_issuer);
        }
        known
    }
}

fn text_arg_or_null(value: Option<&str>) -> owner_spi::Arg {
    match value {
        Some(value) => text_arg(value),
        None => (pg_sys::TEXTOID, None),
    }
}

/// Whether the claims fall under a revocation in force now (for this backend: committed by
/// others before this statement, or made earlier in this transaction).
pub fn claims_revoked(claims: &Claims) -> bool {
    ANSWERS.with(|answers| answers.with(fresh_answers, |answers| answers.check(claims)))
}
