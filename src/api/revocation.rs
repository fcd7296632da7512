//! Sign-out and revocation.
//!
//! These functions run as their caller and decide themselves what the caller may do: anyone
//! may revoke their own session, tokens and user (checked against the identity bound by
//! `auth.authenticate()`); revoking anyone else's needs `session_auth_admin` (or superuser).
//! The write itself then runs as the tables' owner (see `owner_spi.rs`).

use pg_session_auth_core::identity;
use pg_session_auth_core::revocation::{RevocationKeys, EVERY_ISSUER};
use pg_session_auth_core::{Claims, MAX_ID_BYTES};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::{IntoDatum, Uuid};

use crate::errors::{invalid_argument, raise, required, Failure};
use crate::identity::current_claims_even_if_revoked;
use crate::jsonb::JsonbArgument;
use crate::pg::owner_spi::{self, text_arg, uuid_arg, Arg};
use crate::pg::{clock, roles};
use crate::revocation::filter::{self as revocation_filter, BuildOutcome};
use crate::sessions::{self, cookie, Ending};
use crate::{gucs, revocation};

pub(crate) const ADMIN_ROLE: &str = "session_auth_admin";

/// Whether the current user is a superuser or has the privileges of `session_auth_admin`.
pub(crate) fn caller_is_admin() -> bool {
    roles::current_user_is_superuser()
        || roles::role_oid(ADMIN_ROLE)
            .is_some_and(|admin| roles::has_privileges_of(roles::current_user(), admin))
}

/// Allows the call when the caller is an admin or `own` says it concerns the caller's own
/// identity; raises `42501` (permission denied to `action`) otherwise.
fn require_own_or_admin(action: &'static str, own: impl FnOnce(&Claims) -> bool) {
    if caller_is_admin() || current_claims_even_if_revoked().is_some_and(|claims| own(&claims)) {
        return;
    }
    raise(Failure::PermissionDenied {
        action,
        only_own: true,
    })
}

fn tables_owner() -> pg_sys::Oid {
    match owner_spi::relation_and_owner("revoked_sessions") {
        Some((_, owner)) => owner,
        None => raise(Failure::MissingTables {
            what: "the revocation tables are",
        }),
    }
}

/// A token's subject in the one form every write and read of revocations uses.
fn subject(claims: &Claims) -> Option<String> {
    identity::string_claim(claims, "sub").map(identity::canonical_user_id)
}

/// The issuer a token's per-user cut-offs are kept under: its `iss`, or every issuer.
fn issuer_of(claims: &Claims) -> &str {
    identity::string_claim(claims, "iss").unwrap_or(EVERY_ISSUER)
}

/// How long session and user revocations are kept: `max_token_lifetime`, or forever.
fn lifetime_arg() -> Arg {
    (
        pg_sys::FLOAT8OID,
        gucs::max_token_lifetime().and_then(|seconds| (seconds as f64).into_datum()),
    )
}

fn reason_arg(reason: Option<&str>) -> Arg {
    (pg_sys::TEXTOID, reason.into_datum())
}

/// Keeping a revocation: a new row, or a longer `expires_at` for an existing one (NULL, kept
/// forever, is the longest) — never a shorter one, so that nobody can shorten how long another
/// revocation of the same key lasts and have the purge drop it early. Returns whether the row
/// is new.
fn newly_inserted(rows: &[Option<bool>]) -> bool {
    rows.first() == Some(&Some(true))
}

/// Revokes every token of `session_id` (with `reason`), as `auth.revoke_session` does.
pub(crate) fn revoke_session_id(session_id: [u8; 16], reason: &str) -> bool {
    insert_session(session_id, Some(reason))
}

/// Revokes every session of `sessions` (the ones a sign-out ended) in one statement.
pub(crate) fn revoke_session_ids(sessions: &[[u8; 16]], reason: &str) {
    if sessions.is_empty() {
        return;
    }
    revocation::note_revocation_written();
    let ids: Vec<pgrx::Uuid> = sessions
        .iter()
        .map(|id| pgrx::Uuid::from_bytes(*id))
        .collect();
    owner_spi::execute(
        tables_owner(),
        include_str!("../queries/revoke_sessions.sql"),
        &[
            (pg_sys::UUIDARRAYOID, ids.into_datum()),
            reason_arg(Some(reason)),
            lifetime_arg(),
        ],
    );
}

fn insert_session(session_id: [u8; 16], reason: Option<&str>) -> bool {
    revocation::note_revocation_written();
    let (_, rows) = owner_spi::modify(
        tables_owner(),
        include_str!("../queries/revoke_session.sql"),
        &[
            uuid_arg(Some(session_id)),
            reason_arg(reason),
            lifetime_arg(),
        ],
        |row| row.get::<bool>(0),
    );
    newly_inserted(&rows)
}

fn insert_token(
    jti: &str,
    expires_at: Option<TimestampWithTimeZone>,
    reason: Option<&str>,
) -> bool {
    if jti.is_empty() || jti.len() > MAX_ID_BYTES {
        raise(invalid_argument(
            format!("a jti must be 1 to {MAX_ID_BYTES} bytes"),
            None,
        ));
    }
    revocation::note_revocation_written();
    let (_, rows) = owner_spi::modify(
        tables_owner(),
        include_str!("../queries/revoke_token.sql"),
        &[
            text_arg(jti),
            reason_arg(reason),
            (pg_sys::TIMESTAMPTZOID, expires_at.into_datum()),
            lifetime_arg(),
        ],
        |row| row.get::<bool>(0),
    );
    newly_inserted(&rows)
}

/// When a token stops mattering: its `exp` (Unix seconds) as a timestamp.
fn expiry_of(claims: &Claims) -> Option<TimestampWithTimeZone> {
    let exp = claims.get("exp").and_then(serde_json::Value::as_f64)?;
    TimestampWithTimeZone::try_from(clock::from_unix_seconds(exp)).ok()
}

/// Sets a user's cut-off at `issuer` ([`EVERY_ISSUER`] for all) to now — or to `issued_at`
/// (the signing-out token's `iat`) when that is later, so that a token from an issuer whose
/// clock runs ahead still falls under its own sign-out: for every session, or (with
/// `keep_session`) for every session but that one. Replacing an "everywhere else" cut-off kept
/// for another session folds the old one into the all-sessions cut-off, so nothing it revoked
/// comes back.
fn upsert_user_cutoff(
    user_id: &str,
    issuer: &str,
    keep_session: Option<[u8; 16]>,
    issued_at: Option<f64>,
    reason: Option<&str>,
) {
    if user_id.is_empty() || user_id.len() > MAX_ID_BYTES {
        raise(invalid_argument(
            format!("a user id must be 1 to {MAX_ID_BYTES} bytes"),
            None,
        ));
    }
    if issuer.len() > MAX_ID_BYTES {
        raise(invalid_argument(
            format!("an issuer must be at most {MAX_ID_BYTES} bytes"),
            None,
        ));
    }
    revocation::note_revocation_written();
    let Some((relid, owner)) = owner_spi::relation_and_owner("revoked_users") else {
        raise(Failure::MissingTables {
            what: "the revocation tables are",
        });
    };
    // A database not yet updated to 0.3.0 keeps cut-offs for every issuer only.
    let statement = if owner_spi::has_column(relid, "issuer") {
        include_str!("../queries/revoke_user.sql")
    } else {
        include_str!("../queries/revoke_user_0.2.0.sql")
    };
    owner_spi::execute(
        owner,
        statement,
        &[
            text_arg(user_id),
            uuid_arg(keep_session),
            reason_arg(reason),
            lifetime_arg(),
            text_arg(issuer),
            (pg_sys::FLOAT8OID, issued_at.into_datum()),
        ],
    );
}

/// `auth.revoke_session(session_id, reason)`: every token of that session is rejected from
/// now on. True when newly revoked, false when it already was.
#[pg_extern(volatile, parallel_unsafe)]
fn revoke_session(session_id: Option<Uuid>, reason: default!(Option<&str>, "NULL")) -> bool {
    let session = *required(session_id, "session_id").as_bytes();
    require_own_or_admin("revoke another user's session", |claims| {
        identity::session_id(claims) == Some(session)
    });
    let newly = insert_session(session, reason);
    sessions::end_sessions(
        Ending::Session(session),
        "revoked",
        serde_json::json!({ "revocation_reason": reason }),
    );
    newly
}

/// `auth.revoke_user(user_id, reason, issuer)`: global sign-out — every token of that
/// subject issued so far is rejected, at `issuer` (NULL: at every issuer). A subject that is a
/// UUID matches however it is written. Callers who are not admins may revoke only their own
/// subject at their own token's issuer, which a NULL `issuer` then means.
#[pg_extern(volatile, parallel_unsafe, name = "revoke_user")]
pub fn revoke_user_at_issuer(
    user_id: Option<&str>,
    reason: default!(Option<&str>, "NULL"),
    issuer: default!(Option<&str>, "NULL"),
) {
    let user_id = identity::canonical_user_id(required(user_id, "user_id"));
    if caller_is_admin() {
        upsert_user_cutoff(&user_id, issuer.unwrap_or(EVERY_ISSUER), None, None, reason);
        sessions::end_sessions(
            Ending::User {
                user_id: &user_id,
                keep: None,
                issuer,
            },
            "revoked",
            serde_json::json!({ "revocation_reason": reason }),
        );
        return;
    }
    let own = current_claims_even_if_revoked().filter(|claims| {
        subject(claims).as_deref() == Some(user_id.as_str())
            && issuer.is_none_or(|issuer| issuer == issuer_of(claims))
    });
    let Some(own) = own else {
        raise(Failure::PermissionDenied {
            action: "revoke another user's tokens",
            only_own: true,
        })
    };
    upsert_user_cutoff(&user_id, issuer_of(&own), None, None, reason);
    sessions::end_sessions(
        Ending::User {
            user_id: &user_id,
            keep: None,
            issuer: Some(issuer_of(&own)),
        },
        "revoked",
        serde_json::json!({ "revocation_reason": reason }),
    );
}

/// `auth.revoke_user(user_id uuid, reason, issuer)`: the same, for UUID subjects.
#[pg_extern(volatile, parallel_unsafe, name = "revoke_user")]
pub fn revoke_user_uuid_at_issuer(
    user_id: Option<Uuid>,
    reason: default!(Option<&str>, "NULL"),
    issuer: default!(Option<&str>, "NULL"),
) {
    revoke_user_at_issuer(
        Some(&required(user_id, "user_id").to_string()),
        reason,
        issuer,
    );
}

/// `auth.revoke_token(jti, expires_at)`: that one token is rejected from now on; the row may
/// be purged after `expires_at` (give the token's `exp`). True when newly revoked.
#[pg_extern(volatile, parallel_unsafe)]
fn revoke_token(
    jti: Option<&str>,
    expires_at: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> bool {
    let jti = required(jti, "jti");
    if caller_is_admin() {
        return insert_token(jti, expires_at, None);
    }
    // One's own token: kept until it expires, whatever `expires_at` says (a shorter one would
    // let the purge drop this revocation, and any later one of the same jti, early).
    let own = current_claims_even_if_revoked()
        .filter(|claims| identity::string_claim(claims, "jti") == Some(jti));
    let Some(own) = own else {
        raise(Failure::PermissionDenied {
            action: "revoke another user's token",
            only_own: true,
        })
    };
    insert_token(jti, expiry_of(&own), None)
}

/// `auth.sign_out(scope)`: signs the authenticated caller out — `local`: this session,
/// `global`: every session, `others`: every session but this one (Supabase's meanings); the
/// last two at the caller's issuer.
#[pg_extern(volatile, parallel_unsafe)]
fn sign_out(scope: default!(Option<&str>, "'local'")) {
    let scope = required(scope, "scope");
    let Some(claims) = current_claims_even_if_revoked() else {
        raise(Failure::NotAuthenticated {
            function: "auth.sign_out()",
        })
    };
    let session = identity::session_id(&claims);
    let sub = subject(&claims);
    let issued_at = claims.get("iat").and_then(serde_json::Value::as_f64);
    let no_claim = |what: &str| -> ! {
        raise(invalid_argument(
            format!("cannot sign out with scope {scope:?}: the token has no {what}"),
            None,
        ))
    };
    match scope {
        "local" => match (session, identity::string_claim(&claims, "jti")) {
            (Some(session), _) => {
                insert_session(session, Some("sign_out(local)"));
            }
            (None, Some(jti)) => {
                insert_token(jti, expiry_of(&claims), Some("sign_out(local)"));
            }
            (None, None) => no_claim("session_id, sid or jti claim"),
        },
        "global" => upsert_user_cutoff(
            &sub.clone().unwrap_or_else(|| no_claim("sub claim")),
            issuer_of(&claims),
            None,
            issued_at,
            Some("sign_out(global)"),
        ),
        "others" => {
            let session = session.unwrap_or_else(|| no_claim("session_id or sid claim"));
            upsert_user_cutoff(
                &sub.clone().unwrap_or_else(|| no_claim("sub claim")),
                issuer_of(&claims),
                Some(session),
                issued_at,
                Some("sign_out(others)"),
            );
        }
        _ => raise(invalid_argument(
            format!("unknown sign-out scope {scope:?}"),
            Some("The scope is 'local', 'global' or 'others'.".into()),
        )),
    }
    // The sessions the database knows end too, so they can no longer refresh; their access
    // tokens are refused by session id, whatever their iat.
    let ending = match (scope, &sub) {
        ("local", _) => session.map(Ending::Session),
        ("global", Some(sub)) => Some(Ending::User {
            user_id: sub,
            keep: None,
            issuer: Some(issuer_of(&claims)),
        }),
        ("others", Some(sub)) => Some(Ending::User {
            user_id: sub,
            keep: session,
            issuer: Some(issuer_of(&claims)),
        }),
        _ => None,
    };
    if let Some(ending) = ending {
        sessions::end_sessions(ending, "signed out", serde_json::json!({ "scope": scope }));
    }
    cookie::clear_if_requested_over_http();
}

/// `auth.is_revoked(claims)`: whether claims fall under a revocation in force. Admins may
/// ask about any claims; anyone else only about claims whose subject, session, token id and
/// issuer are their own (so that it is no oracle for anyone else's sign-outs).
#[pg_extern(stable, parallel_restricted)]
fn is_revoked(claims: Option<JsonbArgument>) -> bool {
    let claims = required(claims, "claims").object_or_raise("claims");
    require_own_or_admin("check another user's revocations", |own| {
        // Every key the claims are looked up by must be the caller's own: else the answer
        // tells about someone else's session, token or sign-out.
        let (asked, mine) = (RevocationKeys::of(&claims), RevocationKeys::of(own));
        asked.user.is_some()
            && asked.user == mine.user
            && asked.session.is_none_or(|s| mine.session == Some(s))
            && asked.jti.is_none_or(|j| mine.jti == Some(j))
            && asked.issuer.is_none_or(|i| mine.issuer == Some(i))
    });
    revocation::claims_revoked(&claims)
}

/// `auth.purge_revocations()`: deletes revocations that can no longer matter (every token
/// they cover has expired) and returns how many. Admins only. A token is accepted until
/// `exp + leeway`, and its `iat` may lie up to `leeway` ahead, so a row is kept for twice
/// the largest possible leeway (2 × 3600 s) after its `expires_at`.
#[pg_extern(volatile, parallel_unsafe)]
fn purge_revocations() -> i64 {
    if !caller_is_admin() {
        raise(Failure::PermissionDenied {
            action: "purge revocations",
            only_own: false,
        });
    }
    let (_, rows) = owner_spi::modify(
        tables_owner(),
        include_str!("../queries/purge_revocations.sql"),
        &[],
        |row| row.get::<i64>(0),
    );
    rows.first().copied().flatten().unwrap_or(0)
}

/// `auth.revocation_filter()`: the state of this database's shared revocation filter (see
/// README, "The revocation filter"). Admins only.
#[pg_extern(volatile, parallel_unsafe)]
fn revocation_filter() -> TableIterator<
    'static,
    (
        name!(state, String),
        name!(keys, i64),
        name!(capacity, i64),
        name!(bytes, i64),
        name!(builds, i64),
    ),
> {
    let status = revocation_filter::status();
    TableIterator::once((
        status.state.to_owned(),
        status.keys,
        status.capacity,
        status.bytes,
        status.builds,
    ))
}

/// `auth.rebuild_revocation_filter()`: refills this database's filter from the tables now,
/// dropping the keys of purged rows; false (with a NOTICE saying why) when it cannot now.
/// Admins only; run it in its own transaction, e.g. after `auth.purge_revocations()`.
#[pg_extern(volatile, parallel_unsafe)]
fn rebuild_revocation_filter() -> bool {
    if !caller_is_admin() {
        raise(Failure::PermissionDenied {
            action: "rebuild the revocation filter",
            only_own: false,
        });
    }
    let why = match revocation::filter::build_here(true) {
        BuildOutcome::Built => return true,
        BuildOutcome::NotNow => "another session is building it",
        BuildOutcome::NoSlot => {
            "every filter slot is taken by other databases (4 per cluster); checks here look tokens up"
        }
        BuildOutcome::NotHere => {
            "this transaction has written to the revocation tables, or their triggers are not all enabled ALWAYS"
        }
        BuildOutcome::Unavailable => {
            "no shared filter: pg_session_auth is not in shared_preload_libraries, pg_session_auth.revocation_filter_size is 0, or the server is a standby"
        }
    };
    pgrx::notice!("revocation filter not rebuilt: {why}");
    false
}
