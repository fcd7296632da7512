//! Revocation checks: exact, bounded in memory, and almost free when nothing changes.
//!
//! Revocations live in `auth.revoked_sessions`, `auth.revoked_users` and
//! `auth.revoked_tokens`. Each backend keeps the answers it has looked up (session id →
//! revoked?, jti → revoked?, user → cut-offs), so a token seen before costs hash lookups.
//! A token with anything not yet known costs one prepared query (three index probes). Any
//! change to those tables drops every backend's answers from its next statement (see
//! `invalidation.rs`), so an answer is never stale, and when all three tables are empty no
//! lookup is made at all.
//!
//! Memory bound: at most [`MAX_ANSWERS`] answers per kind, a full map being emptied before
//! the next insert, and only for keys (`jti`, `sub`) of at most [`MAX_CACHED_KEY_BYTES`]
//! bytes — longer ones are looked up every time. That bounds the maps at about 5 MB per
//! backend (`bench/revocation` measures it).

use std::cell::RefCell;
use std::collections::HashMap;

use pg_session_auth_core::identity::{canonical_user_id, session_id, string_claim};
use pg_session_auth_core::revocation::{is_revoked, RevocationSource, UserCutoff};
use pg_session_auth_core::Claims;
use pgrx::pg_sys;

use crate::invalidation::{self, Cache};
use crate::owner_spi::{self, text_arg, uuid_arg};

/// Answers kept per kind of revocation.
pub const MAX_ANSWERS: usize = 10_000;
/// Longest `jti` or `sub` whose answer is kept.
pub const MAX_CACHED_KEY_BYTES: usize = 128;

const REVOCATION_TABLES: [&str; 3] = ["revoked_sessions", "revoked_users", "revoked_tokens"];

#[derive(Default)]
struct Answers {
    generation: u64,
    /// Owner of the revocation tables; `None` when the extension is absent or all are empty.
    owner: Option<pg_sys::Oid>,
    sessions: HashMap<[u8; 16], bool>,
    tokens: HashMap<String, bool>,
    users: HashMap<String, Option<UserCutoff>>,
}

thread_local! {
    static ANSWERS: RefCell<Option<Answers>> = const { RefCell::new(None) };
}

fn remember<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= MAX_ANSWERS {
        map.clear();
    }
    map.insert(key, value);
}

/// Starts a fresh set of answers: finds the tables' owner and whether any table has rows.
fn fresh_answers(generation: u64) -> Answers {
    let mut answers = Answers {
        generation,
        ..Answers::default()
    };
    let mut owner = None;
    for table in REVOCATION_TABLES {
        let Some((relid, table_owner)) = owner_spi::relation_and_owner(table) else {
            return answers;
        };
        invalidation::watch(relid, Cache::Revocations);
        owner = Some(table_owner);
    }
    // Through the primary keys' indexes: a sequential scan would read every dead page a
    // purge left behind until VACUUM runs.
    let any_rows = owner_spi::select(
        owner,
        "select (select session_id from auth.revoked_sessions order by session_id limit 1) is not null \
             or (select user_id from auth.revoked_users order by user_id limit 1) is not null \
             or (select jti from auth.revoked_tokens order by jti limit 1) is not null",
        &[],
    );
    if any_rows.first().and_then(|row| row[0].as_deref()) == Some("t") {
        answers.owner = owner;
    }
    if !owner_spi::snapshot_is_latest() {
        invalidation::expire_at_transaction_end(Cache::Revocations);
    }
    answers
}

fn parse_epoch(text: Option<&str>) -> Option<f64> {
    text?.parse().ok()
}

/// What one token's revocation check needs to know, keyed as the core looks it up.
struct Known {
    session: Option<([u8; 16], bool)>,
    token: Option<(String, bool)>,
    user: Option<(String, Option<UserCutoff>)>,
}

impl Answers {
    /// Everything the check of `claims` needs: from the kept answers, and for whatever is
    /// missing from one query.
    fn known_for(&mut self, claims: &Claims) -> Known {
        let session = session_id(claims);
        let jti = string_claim(claims, "jti").map(str::to_owned);
        let user = string_claim(claims, "sub").map(canonical_user_id);
        let Some(owner) = self.owner else {
            return Known {
                session: session.map(|s| (s, false)),
                token: jti.map(|j| (j, false)),
                user: user.map(|u| (u, None)),
            };
        };
        let mut known = Known {
            session: session.and_then(|s| self.sessions.get(&s).map(|&r| (s, r))),
            token: jti
                .as_ref()
                .and_then(|j| self.tokens.get(j).map(|&r| (j.clone(), r))),
            user: user
                .as_ref()
                .and_then(|u| self.users.get(u).map(|&c| (u.clone(), c))),
        };
        let missing_session = session.filter(|_| known.session.is_none());
        let missing_jti = jti.filter(|_| known.token.is_none());
        let missing_user = user.filter(|_| known.user.is_none());
        if missing_session.is_none() && missing_jti.is_none() && missing_user.is_none() {
            return known;
        }
        let rows = owner_spi::select(
            Some(owner),
            "select exists (select from auth.revoked_sessions s where s.session_id operator(pg_catalog.=) $1), \
                    exists (select from auth.revoked_tokens t where t.jti operator(pg_catalog.=) $2), \
                    u.found, u.revoked_before, u.others_revoked_before, u.keep_session_id \
             from (select) as one left join lateral ( \
                 select true as found, \
                        pg_catalog.date_part('epoch', r.revoked_before) as revoked_before, \
                        pg_catalog.date_part('epoch', r.others_revoked_before) as others_revoked_before, \
                        r.keep_session_id \
                 from auth.revoked_users r where r.user_id operator(pg_catalog.=) $3) as u on true",
            &[
                uuid_arg(missing_session),
                text_arg_or_null(missing_jti.as_deref()),
                text_arg_or_null(missing_user.as_deref()),
            ],
        );
        let row = rows.first().expect("the lookup returns one row");
        if let Some(s) = missing_session {
            let revoked = row[0].as_deref() == Some("t");
            remember(&mut self.sessions, s, revoked);
            known.session = Some((s, revoked));
        }
        if let Some(j) = missing_jti {
            let revoked = row[1].as_deref() == Some("t");
            if j.len() <= MAX_CACHED_KEY_BYTES {
                remember(&mut self.tokens, j.clone(), revoked);
            }
            known.token = Some((j, revoked));
        }
        if let Some(u) = missing_user {
            let cutoff = (row[2].as_deref() == Some("t")).then(|| UserCutoff {
                revoked_before: parse_epoch(row[3].as_deref()),
                others_revoked_before: parse_epoch(row[4].as_deref()),
                keep_session: row[5]
                    .as_deref()
                    .and_then(pg_session_auth_core::identity::parse_uuid),
            });
            if u.len() <= MAX_CACHED_KEY_BYTES {
                remember(&mut self.users, u.clone(), cutoff);
            }
            known.user = Some((u, cutoff));
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

/// Answers the core's questions from what was gathered for this token. A question about
/// any other key (which the core, deriving keys the same way, never asks) is answered
/// "revoked": fail closed.
impl RevocationSource for Known {
    fn session_revoked(&mut self, asked: &[u8; 16]) -> bool {
        self.session
            .as_ref()
            .is_none_or(|(key, revoked)| key != asked || *revoked)
    }

    fn token_revoked(&mut self, asked: &str) -> bool {
        self.token
            .as_ref()
            .is_none_or(|(key, revoked)| key != asked || *revoked)
    }

    fn user_cutoff(&mut self, asked: &str) -> Option<UserCutoff> {
        match &self.user {
            Some((key, cutoff)) if key == asked => *cutoff,
            _ => Some(UserCutoff {
                revoked_before: Some(f64::INFINITY),
                ..UserCutoff::default()
            }),
        }
    }
}

thread_local! {
    /// The (sub)transactions of the current transaction that wrote a revocation through the
    /// extension's functions and have not been rolled back.
    static WRITTEN_BY: RefCell<Vec<pg_sys::SubTransactionId>> = const { RefCell::new(Vec::new()) };
}

/// Follows revocations written in this transaction through subtransaction commit and abort.
/// Called once, from `_PG_init`.
pub fn register_transaction_callbacks() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_transaction_end), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subtransaction_end), std::ptr::null_mut());
    }
}

unsafe extern "C-unwind" fn on_transaction_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_PARALLEL_ABORT
            | XACT_EVENT_PREPARE
    ) {
        WRITTEN_BY.with(|written| written.borrow_mut().clear());
    }
}

unsafe extern "C-unwind" fn on_subtransaction_end(
    event: pg_sys::SubXactEvent::Type,
    subtransaction: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    WRITTEN_BY.with(|written| {
        let mut written = written.borrow_mut();
        match event {
            pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => {
                for id in written.iter_mut().filter(|id| **id == subtransaction) {
                    *id = parent;
                }
            }
            pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
                written.retain(|id| *id != subtransaction)
            }
            _ => {}
        }
    });
}

/// Notes that the current (sub)transaction wrote a revocation.
pub fn note_revocation_written() {
    let current = unsafe { pg_sys::GetCurrentSubTransactionId() };
    WRITTEN_BY.with(|written| {
        let mut written = written.borrow_mut();
        if !written.contains(&current) {
            written.push(current);
        }
    });
}

/// Whether this transaction wrote a revocation through the extension's functions (and has
/// not rolled it back). Claim functions then treat a revoked identity as none instead of
/// raising, so that signing out does not abort — and thereby undo — its own transaction.
pub fn revocation_written_in_this_transaction() -> bool {
    WRITTEN_BY.with(|written| !written.borrow().is_empty())
}

/// Whether the claims fall under a revocation in force now (for this backend: committed by
/// others before this statement, or made earlier in this transaction).
pub fn claims_revoked(claims: &Claims) -> bool {
    let generation = invalidation::current_generation(Cache::Revocations);
    let stale = ANSWERS.with(|answers| {
        answers
            .borrow()
            .as_ref()
            .is_none_or(|a| a.generation != generation)
    });
    if stale {
        // Built outside the borrow: it runs queries, which may process invalidations.
        let fresh = fresh_answers(generation);
        ANSWERS.with(|answers| *answers.borrow_mut() = Some(fresh));
    }
    // All revocation tables empty (or no extension): nothing to look up or compute.
    if ANSWERS.with(|answers| answers.borrow().as_ref().is_some_and(|a| a.owner.is_none())) {
        return false;
    }
    // Lookups run queries too; take the answers out while they do.
    let mut answers = ANSWERS
        .with(|answers| answers.borrow_mut().take())
        .expect("answers were just set");
    let mut known = answers.known_for(claims);
    ANSWERS.with(|slot| *slot.borrow_mut() = Some(answers));
    is_revoked(claims, &mut known)
}
