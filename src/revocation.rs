//! Revocation checks: exact, bounded in memory, and almost free when nothing changes.
//!
//! Revocations live in `auth.revoked_sessions`, `auth.revoked_users` and
//! `auth.revoked_tokens`. A check first asks the shared revocation filter
//! (`revocation_filter.rs`, with `shared_preload_libraries`): a token none of whose keys is
//! in it is not revoked, at the cost of a few memory reads. Otherwise each backend keeps the
//! answers it has looked up (session id → revoked?, jti → revoked?, user → cut-offs), so a
//! token seen before costs hash lookups, and a token with anything not yet known costs one
//! prepared query (three index probes). Any change to those tables drops every backend's
//! answers from its next statement (see `invalidation.rs`), so an answer is never stale;
//! without the filter, when all three tables are empty no lookup is made at all.
//!
//! Memory bound: at most [`MAX_ANSWERS`] answers per kind, a full map being emptied before
//! the next insert, and only for keys (`jti`, `sub`) of at most [`MAX_CACHED_KEY_BYTES`]
//! bytes — longer ones are looked up every time. That bounds the maps at about 5 MB per
//! backend (`bench/revocation` measures it). The filter is in shared memory, once per
//! database, not per backend.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use pg_session_auth_core::revocation::{
    RevocationKeys, RevocationSource, UserCutoff, EVERY_ISSUER,
};
use pg_session_auth_core::Claims;
use pgrx::pg_sys;

use crate::invalidation::{self, Cache};
use crate::owner_spi::{self, text_arg, uuid_arg};
use crate::revocation_filter::{self, BuildOutcome, Incarnation, Screening};

/// Answers kept per kind of revocation.
pub const MAX_ANSWERS: usize = 10_000;
/// Longest `jti` or `sub` whose answer is kept.
pub const MAX_CACHED_KEY_BYTES: usize = 128;

/// The revocation tables of the current database, as one generation of answers found them.
#[derive(Clone, Copy, Default)]
struct Tables {
    /// `revoked_sessions`, `revoked_users`, `revoked_tokens`.
    oids: [pg_sys::Oid; 3],
    owner: pg_sys::Oid,
    /// Whether the tables' triggers all fire always. Caches and the shared filter rely on
    /// them; when one is disabled, nothing is cached and every token is looked up.
    triggers_intact: bool,
    /// Changes whenever a trigger on the tables is created, altered (disabled, enabled) or
    /// dropped: a filter built under other triggers may lack keys written meanwhile.
    triggers_version: u64,
    /// Whether `revoked_users` keys cut-offs by issuer (not yet in a database at 0.2.0).
    cutoffs_per_issuer: bool,
}

#[derive(Default)]
struct Answers {
    generation: u64,
    tables: Tables,
    /// Whether any table has rows; found out when first needed.
    any_rows: Option<bool>,
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

/// The tables, their owner and whether their triggers are intact.
///
/// Intact means: the three triggers of each table exist exactly as `sql/finalize.sql` creates
/// them (same timing, level and events — `tgtype` 60: AFTER INSERT OR DELETE OR UPDATE OR
/// TRUNCATE FOR EACH STATEMENT, fired `ALWAYS`; 29: AFTER INSERT OR DELETE OR UPDATE FOR EACH
/// ROW, fired in `REPLICA` mode, for logical replication; 21: AFTER INSERT OR UPDATE FOR EACH
/// ROW, fired `ALWAYS` — no `WHEN`, no columns, no transition tables, same arguments) and call
/// the extension's own C functions.
/// (Catalog columns, not deparsed text, which `quote_all_identifiers` would change.) The
/// version covers every trigger on the tables and both functions, so any change to them is
/// noticed (the filter is then rebuilt before it is used again).
fn find_tables() -> Tables {
    let rows = owner_spi::select(
        None,
        "select c.relname::pg_catalog.text, c.oid::pg_catalog.int8, c.relowner::pg_catalog.int8, \
                (select pg_catalog.count(*) from pg_catalog.pg_trigger t \
                 join pg_catalog.pg_proc p on p.oid operator(pg_catalog.=) t.tgfoid \
                 where t.tgrelid operator(pg_catalog.=) c.oid \
                   and p.prolang operator(pg_catalog.=) 13 \
                   and t.tgqual is null and t.tgoldtable is null and t.tgnewtable is null \
                   and t.tgconstraint operator(pg_catalog.=) 0 \
                   and pg_catalog.cardinality(t.tgattr::pg_catalog.int2[]) operator(pg_catalog.=) 0 \
                   and (t.tgname::pg_catalog.text operator(pg_catalog.=) (c.relname::pg_catalog.text operator(pg_catalog.||) '_invalidate_cache') \
                        and p.prosrc operator(pg_catalog.=) 'invalidate_cached_state_wrapper' \
                        and t.tgenabled operator(pg_catalog.=) 'A' \
                        and t.tgtype operator(pg_catalog.=) 60 and t.tgnargs operator(pg_catalog.=) 0 \
                     or t.tgname::pg_catalog.text operator(pg_catalog.=) (c.relname::pg_catalog.text operator(pg_catalog.||) '_invalidate_cache_replica') \
                        and p.prosrc operator(pg_catalog.=) 'invalidate_cached_state_wrapper' \
                        and t.tgenabled operator(pg_catalog.=) 'R' \
                        and t.tgtype operator(pg_catalog.=) 29 and t.tgnargs operator(pg_catalog.=) 0 \
                     or t.tgname::pg_catalog.text operator(pg_catalog.=) (c.relname::pg_catalog.text operator(pg_catalog.||) '_filter') \
                        and p.prosrc operator(pg_catalog.=) 'note_revocation_wrapper' \
                        and t.tgenabled operator(pg_catalog.=) 'A' \
                        and t.tgtype operator(pg_catalog.=) 21 and t.tgnargs operator(pg_catalog.=) 1 \
                        and t.tgargs operator(pg_catalog.=) (pg_catalog.convert_to(pg_catalog.rtrim(pg_catalog.substr(c.relname, 9), 's'), 'SQL_ASCII') \
                            operator(pg_catalog.||) pg_catalog.decode('00', 'hex')))), \
                (select pg_catalog.string_agg(t.oid::pg_catalog.text operator(pg_catalog.||) ':' \
                            operator(pg_catalog.||) t.xmin::pg_catalog.text, ',' order by t.oid) \
                 from pg_catalog.pg_trigger t where t.tgrelid operator(pg_catalog.=) c.oid), \
                (select pg_catalog.string_agg(p.oid::pg_catalog.text operator(pg_catalog.||) ':' \
                            operator(pg_catalog.||) p.xmin::pg_catalog.text, ',' order by p.oid) \
                 from pg_catalog.pg_proc p where p.oid operator(pg_catalog.=) any (array[ \
                     pg_catalog.to_regproc('auth.note_revocation'), pg_catalog.to_regproc('auth.invalidate_cached_state')]::pg_catalog.oid[])), \
                exists (select from pg_catalog.pg_attribute a where a.attrelid operator(pg_catalog.=) c.oid \
                        and a.attname operator(pg_catalog.=) 'issuer' and not a.attisdropped) \
         from pg_catalog.pg_class c \
         join pg_catalog.pg_namespace n on n.oid operator(pg_catalog.=) c.relnamespace \
         where n.nspname operator(pg_catalog.=) 'auth' \
           and c.relname operator(pg_catalog.=) any (array['revoked_sessions', 'revoked_users', 'revoked_tokens'])",
        &[],
    );
    let number = |text: &Option<String>| text.as_deref().and_then(|t| t.parse::<u32>().ok());
    let mut tables = Tables {
        triggers_intact: true,
        ..Tables::default()
    };
    let mut versions = std::collections::hash_map::DefaultHasher::new();
    let mut found = 0;
    for row in &rows {
        let index = match row[0].as_deref() {
            Some("revoked_sessions") => 0,
            Some("revoked_users") => 1,
            _ => 2,
        };
        let (Some(oid), Some(owner)) = (number(&row[1]), number(&row[2])) else {
            continue;
        };
        tables.oids[index] = pg_sys::Oid::from(oid);
        tables.owner = pg_sys::Oid::from(owner);
        tables.triggers_intact &= number(&row[3]) == Some(3);
        if index == 1 {
            tables.cutoffs_per_issuer = row[6].as_deref() == Some("t");
        }
        (index, &row[4], &row[5]).hash(&mut versions);
        found += 1;
    }
    if found != 3 {
        // Verification must not go on as if nothing were revoked.
        crate::errors::raise(crate::errors::Failure::MissingTables {
            what: "the revocation tables are",
        });
    }
    tables.triggers_version = versions.finish();
    tables
}

/// Starts a fresh generation of answers.
fn fresh_answers(generation: u64) -> Answers {
    let tables = find_tables();
    for oid in tables.oids {
        invalidation::watch(oid, Cache::Revocations);
    }
    Answers {
        generation,
        tables,
        ..Answers::default()
    }
}

impl Tables {
    fn incarnation(&self) -> Incarnation {
        Incarnation {
            tables: self.oids,
            triggers_version: self.triggers_version,
        }
    }
}

/// Whether any revocation table has a row.
fn any_rows(owner: pg_sys::Oid) -> bool {
    // Through the primary keys' indexes: a sequential scan would read every dead page a
    // purge left behind until VACUUM runs.
    let rows = owner_spi::select(
        Some(owner),
        "select (select session_id from auth.revoked_sessions order by session_id limit 1) is not null \
             or (select user_id from auth.revoked_users order by user_id limit 1) is not null \
             or (select jti from auth.revoked_tokens order by jti limit 1) is not null",
        &[],
    );
    rows.first().and_then(|row| row[0].as_deref()) == Some("t")
}

fn parse_epoch(text: Option<&str>) -> Option<f64> {
    text?.parse().ok()
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
macro_rules! user_cutoff_select {
    ($condition:literal) => {
        concat!(
            "(select true as found, \
                    pg_catalog.date_part('epoch', r.revoked_before) as revoked_before, \
                    pg_catalog.date_part('epoch', r.others_revoked_before) as others_revoked_before, \
                    r.keep_session_id \
             from auth.revoked_users r where ",
            $condition,
            ")"
        )
    };
}

/// The session and token probes every lookup starts with ($1 session, $2 jti).
macro_rules! lookup_start {
    () => {
        "select exists (select from auth.revoked_sessions s where s.session_id operator(pg_catalog.=) $1), \
                exists (select from auth.revoked_tokens t where t.jti operator(pg_catalog.=) $2), "
    };
}

/// The lookup of one token's missing answers: $1 session, $2 jti, $3 subject at every issuer,
/// $4 subject at issuer $5 (each NULL when not needed).
const LOOKUP: &str = concat!(
    lookup_start!(),
    "a.found, a.revoked_before, a.others_revoked_before, a.keep_session_id, \
     i.found, i.revoked_before, i.others_revoked_before, i.keep_session_id \
     from (select) as one left join lateral ",
    user_cutoff_select!(
        "r.user_id operator(pg_catalog.=) $3 and r.issuer operator(pg_catalog.=) ''"
    ),
    " as a on true left join lateral ",
    user_cutoff_select!(
        "r.user_id operator(pg_catalog.=) $4 and r.issuer operator(pg_catalog.=) $5"
    ),
    " as i on true"
);

/// [`LOOKUP`] for a database still at version 0.2.0, whose cut-offs hold at every issuer.
const LOOKUP_BEFORE_ISSUERS: &str = concat!(
    lookup_start!(),
    "a.found, a.revoked_before, a.others_revoked_before, a.keep_session_id, \
     null, null, null, null \
     from (select) as one left join lateral ",
    user_cutoff_select!("r.user_id operator(pg_catalog.=) $3"),
    " as a on true"
);

fn cutoff_from(row: &[Option<String>]) -> Option<UserCutoff> {
    (row[0].as_deref() == Some("t")).then(|| UserCutoff {
        revoked_before: parse_epoch(row[1].as_deref()),
        others_revoked_before: parse_epoch(row[2].as_deref()),
        keep_session: row[3]
            .as_deref()
            .and_then(pg_session_auth_core::identity::parse_uuid),
    })
}

impl Answers {
    /// Whether the claims fall under a revocation: the shared filter first, then (for keys
    /// it may hold) the kept answers and one lookup query.
    fn check(&mut self, claims: &Claims) -> bool {
        let tables = self.tables;
        let keys = RevocationKeys::of(claims);
        if tables.triggers_intact
            && revocation_filter::screen(&tables.incarnation(), keys.filter_keys())
                == Screening::Clear
        {
            return false;
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
            LOOKUP
        } else {
            LOOKUP_BEFORE_ISSUERS
        };
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
        );
        let row = rows.first().expect("the lookup returns one row");
        if let Some(s) = missing_session {
            known.session = row[0].as_deref() == Some("t");
            remember(&mut self.sessions, s, known.session);
        }
        if let Some(j) = missing_jti {
            known.token = row[1].as_deref() == Some("t");
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
            known.user_everywhere = cutoff_from(&row[2..6]);
            remember_user(everywhere_key, known.user_everywhere);
        }
        if missing_at_issuer.is_some() {
            known.user_at_issuer = cutoff_from(&row[6..10]);
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

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_transaction_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    if event == XACT_EVENT_PRE_PREPARE && revocation_written_in_this_transaction() {
        // A prepared transaction keeps its row locks until someone ends it: a prepared
        // sign-out would make every later revocation of the same session or user wait on it.
        crate::errors::raise(crate::errors::Failure::PrepareAfterRevocation);
    }
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

/// Notes that the current (sub)transaction wrote a revocation: here, and in a transaction-
/// local internal setting that parallel workers inherit (they cannot see this backend's list).
pub fn note_revocation_written() {
    crate::gucs::note_revoked_in_transaction();
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
    if unsafe { pg_sys::ParallelWorkerNumber } >= 0 {
        return crate::gucs::revoked_in_transaction();
    }
    WRITTEN_BY.with(|written| !written.borrow().is_empty())
}

/// This generation's answers, refreshed when a revocation table changed.
fn current_answers() -> Answers {
    let generation = invalidation::current_generation(Cache::Revocations);
    let kept = ANSWERS.with(|answers| answers.borrow_mut().take());
    match kept {
        Some(answers) if answers.generation == generation => answers,
        // Built outside any borrow: it runs queries, which may process invalidations.
        _ => fresh_answers(generation),
    }
}

/// Whether the claims fall under a revocation in force now (for this backend: committed by
/// others before this statement, or made earlier in this transaction).
pub fn claims_revoked(claims: &Claims) -> bool {
    // Taken out while in use: lookups run queries, which may re-enter.
    let mut answers = current_answers();
    let revoked = answers.check(claims);
    ANSWERS.with(|slot| *slot.borrow_mut() = Some(answers));
    revoked
}

/// Builds the shared filter of this database in this session (see
/// `revocation_filter::build_here`): in the build worker, or with `force` for
/// `auth.rebuild_revocation_filter()`. Never from tables whose triggers are not intact.
pub fn build_filter(force: bool) -> BuildOutcome {
    let answers = current_answers();
    let tables = answers.tables;
    ANSWERS.with(|slot| *slot.borrow_mut() = Some(answers));
    if tables.triggers_intact {
        revocation_filter::build_here(&tables.incarnation(), force)
    } else {
        BuildOutcome::NotHere
    }
}
