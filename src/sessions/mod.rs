//! Sessions: sign-in, refresh-token rotation with theft detection, step-up, ending.
//!
//! A session is a row of `auth.sessions`; its refresh tokens are derived from the server
//! secret, its id and its counter (`core::refresh_token`), so the row stores no token. Every
//! refresh locks the row, so concurrent refreshes and sign-outs are serialised: exactly one
//! rotation per token, and a session ended by a sign-out never refreshes again. The lock is
//! taken in a subtransaction so that a theft verdict can release it before the session is
//! ended by a background worker (`durable.rs`) in a transaction that the caller's rollback
//! cannot undo.

pub mod access_token;
pub mod cookie;
mod secret;

use std::net::IpAddr;

use pg_session_auth_core::activity::{parse_address, Action};
use pg_session_auth_core::identity::canonical_user_id;
use pg_session_auth_core::refresh_token::{RefreshDecision, RefreshState};
use pg_session_auth_core::MAX_ID_BYTES;
use pgrx::{pg_sys, IntoDatum};
use serde_json::{json, Map, Value};

use crate::activity::rejections::{self, Reason, Refused};
use crate::activity::rules::{self, Event, Fired};
use crate::activity::stats::{self, Stat};
use crate::activity::{actions, client_ip};
use crate::audit;
use crate::durable::{self, Writes};
use crate::errors::{invalid_argument, raise, Failure};
use crate::gucs;
use crate::pg::owner_spi::{self, text_arg, uuid_arg, Arg};
use crate::pg::{clock, locks, transaction};
use access_token::{check_extra_claims, issue, random_uuid, uuid_text, SessionClaims};

pub const SESSIONS_TABLE: &str = "sessions";

/// Longest user agent kept (longer ones are cut).
const MAX_USER_AGENT_BYTES: usize = 512;

/// GoTrue's token response.
pub struct TokenResponse {
    pub access_token: String,
    pub expires_in: i32,
    pub expires_at: i64,
    pub refresh_token: Option<String>,
    pub session_id: [u8; 16],
    /// When the session must end at the latest (µs), for a cookie's lifetime.
    pub session_end: Option<i64>,
}

/// Why a refresh is refused (`28000`, with this as the message).
pub mod refusal {
    pub const INVALID: &str = "invalid refresh token";
    pub const EXPIRED: &str = "session expired";
    pub const TIMED_OUT: &str = "session timed out";
    pub const ENDED: &str = "session ended";
    pub const REUSED: &str = "refresh token reused";
    /// A rule with the `revoke` action fired on the refresh.
    pub const UNUSUAL_ACTIVITY: &str = "session revoked: unusual activity";
    /// A rule with the `revoke` action fired on the sign-in.
    pub const SIGN_IN_REFUSED: &str = "sign-in refused: unusual activity";
}

fn refuse(reason: &'static str) -> ! {
    raise(Failure::RefreshRefused { reason })
}

/// Refuses a refresh, first counting and recording the refusal (`activity/rejections.rs`):
/// with the session and its user when the token's tag was good, and the request's address
/// (never the `ip` argument, which the caller chooses).
fn refuse_refresh(
    reason: &'static str,
    session: Option<[u8; 16]>,
    user: Option<(&str, &str)>,
) -> ! {
    rejections::rejected(Refused {
        reason: Reason::of_refresh(reason),
        kid: None,
        subject: user.map(|(user_id, _)| user_id),
        issuer: user.map(|(_, issuer)| issuer),
        session,
        ip: rejections::request_address(),
    });
    refuse(reason)
}

/// On a hot standby nothing is written: `25006` before anything else.
fn require_primary(what: &'static str) {
    if locks::recovery_in_progress() {
        raise(Failure::ReadOnly { what })
    }
}

/// The owner of the sessions table; `55000` while the database's extension objects are
/// older than the library (no rules table yet).
fn sessions_owner() -> pg_sys::Oid {
    owner_spi::relation_and_owner(SESSIONS_TABLE)
        .filter(|_| owner_spi::relation_and_owner(rules::RULES_TABLE).is_some())
        .map(|(_, owner)| owner)
        .unwrap_or_else(|| {
            raise(Failure::NotUpdated {
                what: "sessions can be used",
            })
        })
}

/// An optional text argument.
fn optional_text(value: Option<&str>) -> Arg {
    (pg_sys::TEXTOID, value.into_datum())
}

fn inet_arg(ip: Option<&pgrx::Inet>) -> Arg {
    (pg_sys::INETOID, ip.cloned().into_datum())
}

/// A user agent as kept: without control characters (a NUL cannot be stored, a newline would
/// forge log lines), cut to [`MAX_USER_AGENT_BYTES`] at a character boundary.
fn user_agent(text: Option<&str>) -> Option<String> {
    let mut kept = String::new();
    for character in text?.chars().filter(|character| !character.is_control()) {
        if kept.len() + character.len_utf8() > MAX_USER_AGENT_BYTES {
            break;
        }
        kept.push(character);
    }
    Some(kept)
}

fn check_aal(aal: &str) {
    if !matches!(aal, "aal1" | "aal2" | "aal3") {
        raise(invalid_argument(
            format!("unknown assurance level {aal:?}"),
            Some("The level is 'aal1', 'aal2' or 'aal3'.".into()),
        ));
    }
}

/// `amr` as given (a JSON array), or a password sign-in now.
fn methods(amr: Option<Value>, now_micros: i64) -> Value {
    match amr {
        Some(Value::Array(methods)) => Value::Array(methods),
        Some(_) => raise(invalid_argument("amr must be a JSON array", None)),
        None => json!([{ "method": "password", "timestamp": now_micros.div_euclid(1_000_000) }]),
    }
}

/// The pair a session hands out at `counter`: an access token signed now (never outliving
/// `session_end`) and the refresh token of that counter.
fn pair(
    session: [u8; 16],
    claims: &SessionClaims<'_>,
    counter: u64,
    now: i64,
    session_end: Option<i64>,
) -> TokenResponse {
    let issued = issue(claims, now, session_end);
    TokenResponse {
        access_token: issued.access_token,
        expires_in: issued.expires_in,
        expires_at: issued.expires_at,
        refresh_token: Some(secret::refresh_secret().token(&session, counter)),
        session_id: session,
        session_end,
    }
}

/// The counter a writing query returned; `refusal` when it returned none.
fn counter_of(counters: Vec<Option<i64>>, refusal: &'static str) -> u64 {
    counters
        .into_iter()
        .next()
        .flatten()
        .and_then(|counter| u64::try_from(counter).ok())
        .unwrap_or_else(|| refuse(refusal))
}

/// What [`create`] is given.
pub struct SignIn<'a> {
    pub user_id: &'a str,
    pub claims: Map<String, Value>,
    pub user_agent: Option<&'a str>,
    pub ip: Option<pgrx::Inet>,
    pub aal: &'a str,
    pub amr: Option<Value>,
    pub tag: Option<&'a str>,
    pub not_after: Option<pgrx::datum::TimestampWithTimeZone>,
}

/// Starts a session and returns its first pair.
pub fn create(sign_in: SignIn<'_>) -> TokenResponse {
    require_primary("create sessions");
    if sign_in.user_id.is_empty() || sign_in.user_id.len() > MAX_ID_BYTES {
        raise(invalid_argument(
            format!("a user id must be 1 to {MAX_ID_BYTES} bytes"),
            None,
        ));
    }
    if sign_in.tag.is_some_and(|tag| tag.len() > MAX_ID_BYTES) {
        raise(invalid_argument(
            format!("a tag must be at most {MAX_ID_BYTES} bytes"),
            None,
        ));
    }
    check_extra_claims(&sign_in.claims);
    check_aal(sign_in.aal);
    if sign_in
        .not_after
        .is_some_and(|at| matches!(pg_sys::TimestampTz::from(at), i64::MIN | i64::MAX))
    {
        raise(invalid_argument("not_after must be a finite time", None));
    }
    let user_id = canonical_user_id(sign_in.user_id);
    let owner = sessions_owner();
    // Fail before writing anything when nothing can sign.
    crate::signing_keys::key_in_use();
    let session = random_uuid();
    let limits = gucs::session_limits();
    let now_estimate = clock::now_unix_micros();
    let amr = methods(sign_in.amr, now_estimate);
    let ip = client_ip::trusted(sign_in.ip.as_ref());
    let agent = user_agent(sign_in.user_agent);
    let issuer = gucs::issuer().unwrap_or_default();
    let event = Event {
        kind: "sign_in",
        user_id: &user_id,
        issuer: &issuer,
        session: Some(session),
        ip,
        user_agent: agent.as_deref(),
        previous_ip: None,
        previous_user_agent: None,
        aal: sign_in.aal,
    };
    let fired = rules::at_sign_in(&event, owner);
    let strongest = actions::strongest(&fired);
    if strongest == Some(Action::Revoke) {
        // The sign-in is refused, so nothing of it is written here: the events say why.
        // Nothing of the sign-in is written here: no session exists to name.
        let refused = Event {
            session: None,
            ..event
        };
        durable::write_independently(Writes {
            ending: None,
            events: actions::events(&refused, &fired),
        });
        refuse(refusal::SIGN_IN_REFUSED);
    }
    let step_up = strongest >= Some(Action::StepUp);
    let (_, created) = owner_spi::modify(
        owner,
        include_str!("../queries/session_create.sql"),
        &[
            uuid_arg(Some(session)),
            text_arg(&user_id),
            (pg_sys::TIMESTAMPTZOID, sign_in.not_after.into_datum()),
            text_arg(sign_in.aal),
            text_arg(&amr.to_string()),
            optional_text(sign_in.tag),
            (
                pg_sys::JSONBOID,
                Some(crate::pg::jsonb::object_to_jsonb(&sign_in.claims)),
            ),
            optional_text(agent.as_deref()),
            inet_arg(client_ip::as_inet(ip).as_ref()),
            text_arg(&issuer),
            (pg_sys::BOOLOID, step_up.into_datum()),
        ],
        |row| row.get::<i64>(0),
    );
    let created = created.into_iter().next().flatten().unwrap_or(now_estimate);
    let not_after = sign_in.not_after.map(|at| clock::unix_micros(at.into()));
    let session_end = [
        not_after,
        limits.timebox.map(|timebox| created + timebox),
        limits.inactivity_timeout.map(|timeout| created + timeout),
    ]
    .into_iter()
    .flatten()
    .min();
    audit::record_for_session(
        audit::event::SESSION_CREATED,
        session,
        flagged(
            json!({ "aal": sign_in.aal, "amr": amr, "tag": sign_in.tag }),
            &fired,
        ),
    );
    actions::record(&event, &fired);
    let session_text = uuid_text(&session);
    let claims = SessionClaims {
        user_id: &user_id,
        session_id: &session_text,
        aal: sign_in.aal,
        amr: &amr,
        extra: &sign_in.claims,
        reauth_required: step_up,
    };
    stats::count(Stat::SessionsCreated);
    pair(session, &claims, 0, created, session_end)
}

/// A session as a refresh reads it (locked).
struct Locked {
    user_id: String,
    created: i64,
    last_activity: i64,
    not_after: Option<i64>,
    aal: String,
    amr: Value,
    claims: Map<String, Value>,
    counter: u64,
    step_up_floor: u64,
    superseded_at: Vec<i64>,
    ended: bool,
    now: i64,
    issuer: String,
    user_agent: Option<String>,
    ip: Option<IpAddr>,
    reauth_required: bool,
}

/// `details` with the rules that fired on the event (`flagged`), when any did.
fn flagged(mut details: Value, fired: &[Fired]) -> Value {
    if !fired.is_empty() {
        details["flagged"] = json!(actions::flagged(fired));
    }
    details
}

fn lock_session(owner: pg_sys::Oid, session: [u8; 16]) -> Option<Locked> {
    let rows = owner_spi::modify(
        owner,
        include_str!("../queries/session_for_refresh.sql"),
        &[uuid_arg(Some(session))],
        |row| {
            // Stored JSON that no longer parses (written by hand) fails closed: a session's
            // claims are never dropped silently.
            let json = |column| {
                let text = row.get::<String>(column)?;
                Some(serde_json::from_str::<Value>(&text).unwrap_or_else(|_| {
                    raise(Failure::ObjectsAltered {
                        what: "a session's stored claims cannot be read".into(),
                    })
                }))
            };
            Some(Locked {
                user_id: row.get(0)?,
                created: row.get(1)?,
                last_activity: row.get(2)?,
                not_after: row.get(3),
                aal: row.get(4)?,
                amr: json(5)?,
                claims: match json(6)? {
                    Value::Object(claims) => claims,
                    _ => raise(Failure::ObjectsAltered {
                        what: "a session's stored claims are not an object".into(),
                    }),
                },
                counter: u64::try_from(row.get::<i64>(7)?).ok()?,
                step_up_floor: u64::try_from(row.get::<i64>(8)?).ok()?,
                superseded_at: row
                    .get::<Vec<Option<i64>>>(9)
                    .unwrap_or_default()
                    .into_iter()
                    .flatten()
                    .collect(),
                ended: row.get(10)?,
                now: row.get(11)?,
                issuer: row.get(12).unwrap_or_default(),
                user_agent: row.get(13),
                ip: row.get::<String>(14).and_then(|ip| parse_address(&ip)),
                reauth_required: row.get(15).unwrap_or(false),
            })
        },
    )
    .1;
    rows.into_iter().next().flatten()
}

impl Locked {
    /// When the session must end at the latest (µs), counting a refresh now as activity.
    fn end(&self, refreshed_now: bool) -> Option<i64> {
        let limits = gucs::session_limits();
        let activity = if refreshed_now {
            self.now
        } else {
            self.last_activity
        };
        [
            self.not_after,
            limits.timebox.map(|timebox| self.created + timebox),
            limits.inactivity_timeout.map(|timeout| activity + timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Why the session can no longer refresh, if it cannot.
    fn refusal(&self) -> Option<&'static str> {
        let limits = gucs::session_limits();
        if self.ended {
            Some(refusal::ENDED)
        } else if self.not_after.is_some_and(|at| self.now >= at) {
            Some(refusal::EXPIRED)
        } else if limits
            .timebox
            .is_some_and(|timebox| self.now >= self.created + timebox)
            || limits
                .inactivity_timeout
                .is_some_and(|timeout| self.now >= self.last_activity + timeout)
        {
            Some(refusal::TIMED_OUT)
        } else {
            None
        }
    }
}

/// What happened to a refresh inside its subtransaction.
enum Outcome {
    Refreshed(Box<TokenResponse>),
    /// The session ends, and the refresh is refused for `reason`; `writes` say why.
    Ends {
        reason: &'static str,
        user_id: String,
        issuer: String,
        writes: Box<Writes>,
    },
}

/// Refreshes: rotates the presented token (or hands back the current one) and returns a new
/// pair; ends the whole session on theft, or when a rule that revokes fires.
pub fn refresh(token: &str, agent: Option<&str>, ip: Option<pgrx::Inet>) -> TokenResponse {
    require_primary("refresh sessions");
    let ip = client_ip::trusted(ip.as_ref());
    let agent = user_agent(agent);
    let secret = secret::refresh_secret();
    let presented = secret
        .open(token)
        .unwrap_or_else(|| refuse_refresh(refusal::INVALID, None, None));
    let id = presented.session;
    let owner = sessions_owner();
    let outcome = transaction::in_subtransaction(
        || {
            let Some(session) = lock_session(owner, id) else {
                refuse_refresh(refusal::INVALID, Some(id), None)
            };
            let user = Some((session.user_id.as_str(), session.issuer.as_str()));
            if let Some(reason) = session.refusal() {
                refuse_refresh(reason, Some(id), user);
            }
            let state = RefreshState {
                counter: session.counter,
                step_up_floor: session.step_up_floor,
                superseded_at: &session.superseded_at,
            };
            let event = Event {
                kind: "refresh",
                user_id: &session.user_id,
                issuer: &session.issuer,
                session: Some(id),
                ip,
                user_agent: agent.as_deref(),
                previous_ip: session.ip,
                previous_user_agent: session.user_agent.as_deref(),
                aal: &session.aal,
            };
            let rotate = match state.decide(
                presented.counter,
                session.now,
                gucs::session_limits().reuse_interval,
            ) {
                RefreshDecision::Rotate => true,
                RefreshDecision::HandBackCurrent => false,
                RefreshDecision::SupersededByStepUp | RefreshDecision::NeverIssued => {
                    refuse_refresh(refusal::INVALID, Some(id), user)
                }
                RefreshDecision::Theft => return theft(&event),
            };
            let fired = rules::at_refresh(&event, session.last_activity, session.now);
            let strongest = actions::strongest(&fired);
            if strongest == Some(Action::Revoke) {
                return revoked_by_rule(&event, &fired);
            }
            let (_, rotated) = owner_spi::modify(
                owner,
                include_str!("../queries/session_rotate.sql"),
                &[
                    uuid_arg(Some(id)),
                    (pg_sys::BOOLOID, rotate.into_datum()),
                    optional_text(agent.as_deref()),
                    inet_arg(client_ip::as_inet(ip).as_ref()),
                    (
                        pg_sys::BOOLOID,
                        (strongest >= Some(Action::StepUp)).into_datum(),
                    ),
                ],
                |row| Some((row.get::<i64>(0)?, row.get::<bool>(1)?)),
            );
            let (counter, reauth_required) = rotated.into_iter().next().flatten().unzip();
            let counter = counter_of(vec![counter], refusal::INVALID);
            let (event_name, details) = if rotate {
                (audit::event::SESSION_REFRESHED, json!({}))
            } else {
                (
                    audit::event::REFRESH_TOKEN_REUSED,
                    json!({ "cause": "within_interval" }),
                )
            };
            audit::record_presented(
                event_name,
                id,
                audit::Presented {
                    ip: None,
                    user_agent: None,
                    by: None,
                },
                flagged(details, &fired),
            );
            actions::record(&event, &fired);
            stats::count(Stat::SessionsRefreshed);
            let session_text = uuid_text(&id);
            let claims = SessionClaims {
                user_id: &session.user_id,
                session_id: &session_text,
                aal: &session.aal,
                amr: &session.amr,
                extra: &session.claims,
                reauth_required: reauth_required.unwrap_or(session.reauth_required),
            };
            Outcome::Refreshed(Box::new(pair(
                id,
                &claims,
                counter,
                session.now,
                session.end(true),
            )))
        },
        |outcome| matches!(outcome, Outcome::Refreshed(_)),
    );
    match outcome {
        Outcome::Refreshed(response) => *response,
        Outcome::Ends {
            reason,
            user_id,
            issuer,
            writes,
        } => {
            durable::write_independently(*writes);
            stats::count(Stat::SessionsEnded);
            refuse_refresh(reason, Some(id), Some((&user_id, &issuer)))
        }
    }
}

/// A superseded token presented after the reuse interval: the session ends
/// (`refresh_token_reused`, whose action is always `revoke`).
fn theft(event: &Event<'_>) -> Outcome {
    let rules = rules::rules();
    let fired: Vec<Fired> = rules
        .built_in(rules::REFRESH_TOKEN_REUSED)
        .map(|rule| Fired {
            // Whatever the row says, a theft ends the session (its CHECK says so too).
            action: Action::Revoke,
            ..rule.fired(json!({ "cause": "theft" }))
        })
        .into_iter()
        .collect();
    ending(
        event,
        &fired,
        refusal::REUSED,
        audit::event::REFRESH_TOKEN_REUSED,
        json!({ "cause": "theft", "session_ended": true }),
    )
}

/// A rule that revokes fired: the session ends.
fn revoked_by_rule(event: &Event<'_>, fired: &[Fired]) -> Outcome {
    ending(
        event,
        fired,
        refusal::UNUSUAL_ACTIVITY,
        audit::event::SESSION_REVOKED,
        json!({ "reason": "unusual activity", "flagged": actions::flagged(fired) }),
    )
}

fn ending(
    event: &Event<'_>,
    fired: &[Fired],
    reason: &'static str,
    event_name: &'static str,
    details: Value,
) -> Outcome {
    let writes = Writes {
        ending: Some(durable::Ending {
            session: event.session.unwrap_or_default(),
            reason,
            event: event_name,
            details,
            ip: event.ip.map(|ip| ip.to_string()),
            user_agent: event.user_agent.map(str::to_owned),
        }),
        events: actions::events(event, fired),
    };
    Outcome::Ends {
        reason,
        user_id: event.user_id.to_owned(),
        issuer: event.issuer.to_owned(),
        writes: Box::new(writes),
    }
}

/// Raises the level of `session` (of `user_id`) after a step-up and returns a new pair;
/// every refresh token issued before is superseded by it.
pub fn step_up(session: [u8; 16], aal: &str, amr: Option<Value>) -> TokenResponse {
    require_primary("update sessions");
    check_aal(aal);
    let owner = sessions_owner();
    let Some(locked) = lock_session(owner, session) else {
        refuse(refusal::INVALID)
    };
    if let Some(reason) = locked.refusal() {
        refuse(reason);
    }
    let amr = methods(amr, locked.now);
    let (_, counters) = owner_spi::modify(
        owner,
        include_str!("../queries/session_step_up.sql"),
        &[
            uuid_arg(Some(session)),
            text_arg(aal),
            text_arg(&amr.to_string()),
        ],
        |row| row.get::<i64>(0),
    );
    let counter = counter_of(counters, refusal::ENDED);
    audit::record_for_session(
        audit::event::SESSION_STEPPED_UP,
        session,
        json!({ "aal": aal }),
    );
    let session_text = uuid_text(&session);
    let claims = SessionClaims {
        user_id: &locked.user_id,
        session_id: &session_text,
        aal,
        amr: &amr,
        extra: &locked.claims,
        reauth_required: false,
    };
    pair(session, &claims, counter, locked.now, locked.end(false))
}

/// Which sessions to end.
pub enum Ending<'a> {
    Session([u8; 16]),
    /// Every session of the user at `issuer` (`None`: at every issuer), but `keep`.
    User {
        user_id: &'a str,
        keep: Option<[u8; 16]>,
        issuer: Option<&'a str>,
    },
}

/// Ends the matching sessions that have not ended, and revokes each one's access tokens by
/// session id (whatever their `iat`); returns the sessions it ended. A database without
/// the sessions table (not yet updated) has none.
pub fn end_sessions(ending: Ending<'_>, reason: &str, details: Value) -> Vec<[u8; 16]> {
    let Some((_, owner)) = owner_spi::relation_and_owner(SESSIONS_TABLE) else {
        return Vec::new();
    };
    let (session, user, keep, issuer) = match ending {
        Ending::Session(session) => (Some(session), None, None, None),
        Ending::User {
            user_id,
            keep,
            issuer,
        } => (None, Some(canonical_user_id(user_id)), keep, issuer),
    };
    let (_, ended) = owner_spi::modify(
        owner,
        include_str!("../queries/sessions_end.sql"),
        &[
            uuid_arg(session),
            optional_text(user.as_deref()),
            uuid_arg(keep),
            text_arg(reason),
            optional_text(issuer),
        ],
        |row| row.get::<pgrx::Uuid>(0).map(|id| *id.as_bytes()),
    );
    let ended: Vec<[u8; 16]> = ended.into_iter().flatten().collect();
    stats::add(Stat::SessionsEnded, ended.len() as u64);
    let event = match reason {
        "signed out" => audit::event::SIGNED_OUT,
        "revoked" => audit::event::SESSION_REVOKED,
        _ => audit::event::SESSION_ENDED,
    };
    crate::api::revocation::revoke_session_ids(&ended, reason);
    let mut details = details;
    if let Value::Object(details) = &mut details {
        details.insert("reason".into(), json!(reason));
    }
    audit::record_for_sessions(event, &ended, details);
    ended
}

/// Whose session `session` is — its user and issuer — if it exists.
pub fn owner_of(session: [u8; 16]) -> Option<(String, String)> {
    let (_, owner) = owner_spi::relation_and_owner(SESSIONS_TABLE)?;
    owner_spi::select(
        Some(owner),
        include_str!("../queries/session_owner.sql"),
        &[uuid_arg(Some(session))],
        |row| Some((row.get::<String>(0)?, row.get::<String>(1)?)),
    )
    .into_iter()
    .next()
    .flatten()
}

/// A row of `auth.list_sessions()`.
pub struct Device {
    pub session_id: [u8; 16],
    pub created_at: pgrx::datum::TimestampWithTimeZone,
    pub refreshed_at: Option<pgrx::datum::TimestampWithTimeZone>,
    pub user_agent: Option<String>,
    pub ip: Option<pgrx::Inet>,
    pub aal: String,
    pub tag: Option<String>,
    pub not_after: Option<pgrx::datum::TimestampWithTimeZone>,
}

/// The active sessions of `user_id` at `issuer` (`None`: at every issuer), newest first.
pub fn list(user_id: &str, issuer: Option<&str>) -> Vec<Device> {
    let owner = sessions_owner();
    owner_spi::select(
        Some(owner),
        include_str!("../queries/sessions_list.sql"),
        &[text_arg(&canonical_user_id(user_id)), optional_text(issuer)],
        |row| {
            Some(Device {
                session_id: *row.get::<pgrx::Uuid>(0)?.as_bytes(),
                created_at: row.get(1)?,
                refreshed_at: row.get(2),
                user_agent: row.get(3),
                ip: row.get(4),
                aal: row.get(5)?,
                tag: row.get(6),
                not_after: row.get(7),
            })
        },
    )
    .into_iter()
    .flatten()
    .collect()
}

/// Deletes sessions ended or expired more than `older_than_seconds` ago; returns how many.
pub fn purge(older_than_seconds: f64) -> i64 {
    require_primary("purge sessions");
    let owner = sessions_owner();
    let limits = gucs::session_limits();
    let seconds = |micros: Option<i64>| micros.map(|micros| micros as f64 / 1_000_000.0);
    owner_spi::modify(
        owner,
        include_str!("../queries/sessions_purge.sql"),
        &[
            (pg_sys::FLOAT8OID, older_than_seconds.into_datum()),
            (pg_sys::FLOAT8OID, seconds(limits.timebox).into_datum()),
            (
                pg_sys::FLOAT8OID,
                seconds(limits.inactivity_timeout).into_datum(),
            ),
            (
                pg_sys::OIDOID,
                crate::pg::roles::current_user().into_datum(),
            ),
        ],
        |row| row.get::<i64>(0),
    )
    .1
    .into_iter()
    .next()
    .flatten()
    .unwrap_or(0)
}
