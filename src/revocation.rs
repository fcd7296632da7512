//! Revocation checks: exact, bounded in memory, and almost free when nothing changes.
//!
//! Revocations live in `auth.revoked_sessions`, `auth.revoked_users` and
//! `auth.revoked_tokens`. Each backend keeps the answers it has looked up (session id →
//! revoked?, jti → revoked?, user → cut-offs), so a token seen before costs a hash lookup.
//! A miss is one prepared index lookup. Any change to those tables drops every backend's
//! answers from its next statement (see `invalidation.rs`), so an answer is never stale, and
//! when all three tables are empty no lookup is made at all.
//!
//! Memory bound: at most [`MAX_ANSWERS`] answers per kind; a full map is emptied before
//! the next insert. With the key sizes involved that is about 3 MB per backend at most.

use std::cell::RefCell;
use std::collections::HashMap;

use pg_session_auth_core::revocation::{is_revoked, RevocationSource, UserCutoff};
use pg_session_auth_core::Claims;
use pgrx::pg_sys;

use crate::invalidation::{self, Cache};
use crate::owner_spi::{self, text_arg, uuid_arg};

/// Answers kept per kind of revocation.
pub const MAX_ANSWERS: usize = 10_000;

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
    let any_rows = owner_spi::select(
        owner,
        "select exists (select from auth.revoked_sessions) or exists (select from auth.revoked_users) \
         or exists (select from auth.revoked_tokens)",
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

impl RevocationSource for Answers {
    fn session_revoked(&mut self, session_id: &[u8; 16]) -> bool {
        let Some(owner) = self.owner else {
            return false;
        };
        if let Some(&revoked) = self.sessions.get(session_id) {
            return revoked;
        }
        let rows = owner_spi::select(
            Some(owner),
            "select from auth.revoked_sessions where session_id operator(pg_catalog.=) $1",
            &[uuid_arg(Some(*session_id))],
        );
        let revoked = !rows.is_empty();
        remember(&mut self.sessions, *session_id, revoked);
        revoked
    }

    fn token_revoked(&mut self, jti: &str) -> bool {
        let Some(owner) = self.owner else {
            return false;
        };
        if let Some(&revoked) = self.tokens.get(jti) {
            return revoked;
        }
        let rows = owner_spi::select(
            Some(owner),
            "select from auth.revoked_tokens where jti operator(pg_catalog.=) $1",
            &[text_arg(jti)],
        );
        let revoked = !rows.is_empty();
        remember(&mut self.tokens, jti.to_owned(), revoked);
        revoked
    }

    fn user_cutoff(&mut self, user_id: &str) -> Option<UserCutoff> {
        let owner = self.owner?;
        if let Some(cutoff) = self.users.get(user_id) {
            return *cutoff;
        }
        let rows = owner_spi::select(
            Some(owner),
            "select pg_catalog.date_part('epoch', revoked_before), \
             pg_catalog.date_part('epoch', others_revoked_before), keep_session_id \
             from auth.revoked_users where user_id operator(pg_catalog.=) $1",
            &[text_arg(user_id)],
        );
        let cutoff = rows.first().map(|row| UserCutoff {
            revoked_before: parse_epoch(row[0].as_deref()),
            others_revoked_before: parse_epoch(row[1].as_deref()),
            keep_session: row[2]
                .as_deref()
                .and_then(pg_session_auth_core::identity::parse_uuid),
        });
        remember(&mut self.users, user_id.to_owned(), cutoff);
        cutoff
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
    // Lookups run queries too; take the answers out while they do.
    let mut answers = ANSWERS
        .with(|answers| answers.borrow_mut().take())
        .expect("answers were just set");
    let revoked = is_revoked(claims, &mut answers);
    ANSWERS.with(|slot| *slot.borrow_mut() = Some(answers));
    revoked
}
