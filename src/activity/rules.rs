//! Detection rules: rows of `auth.activity_rules`, evaluated at sign-in and refresh (and, for
//! the rules that fire on failures, where the failure is counted: `rejections.rs`).
//!
//! The rows are read once and kept per backend until the table changes (`cache.rs`), so an
//! `UPDATE` of an action or threshold is in force from the next statement everywhere and a
//! refresh costs no query for them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use pg_session_auth_core::activity::{network_of, Action};
use pgrx::{pg_sys, IntoDatum};
use serde_json::{json, Value};

use crate::activity::stats::{self, Stat};
use crate::cache::{self, GenerationCache, Source};
use crate::errors::{raise, Failure};
use crate::pg::owner_spi::{self, text_arg};
use crate::pg::{roles, transaction};

pub const RULES_TABLE: &str = "activity_rules";

/// The built-in rules, by name (README, "Unusual activity").
pub const BUILT_IN_RULES: [&str; 9] = [
    REFRESH_TOKEN_REUSED,
    NEW_DEVICE,
    NEW_NETWORK,
    SESSION_DEVICE_CHANGED,
    SESSION_NETWORK_CHANGED,
    TOO_MANY_SESSIONS,
    FAILED_REFRESHES,
    CONCURRENT_NETWORKS,
    USE_AFTER_SIGN_OUT,
];
pub const REFRESH_TOKEN_REUSED: &str = "refresh_token_reused";
pub const NEW_DEVICE: &str = "new_device";
pub const NEW_NETWORK: &str = "new_network";
pub const SESSION_DEVICE_CHANGED: &str = "session_device_changed";
pub const SESSION_NETWORK_CHANGED: &str = "session_network_changed";
pub const TOO_MANY_SESSIONS: &str = "too_many_sessions";
pub const FAILED_REFRESHES: &str = "failed_refreshes";
pub const CONCURRENT_NETWORKS: &str = "concurrent_networks";
pub const USE_AFTER_SIGN_OUT: &str = "use_after_sign_out";

/// A rule as its row says.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    pub threshold: u64,
    /// µs; 0 when the row has none.
    pub period: i64,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    custom: Option<Custom>,
}

/// A custom rule's call (`select <function>($1)`), the role it runs as and the function's
/// owner, as read (a change of the function re-reads them).
#[derive(Clone, Debug)]
struct Custom {
    call: &'static str,
    run_as: Option<pg_sys::Oid>,
    function_owner: Option<pg_sys::Oid>,
}

impl Rule {
    pub fn network(&self, address: IpAddr) -> String {
        network_of(address, self.ipv4_prefix, self.ipv6_prefix)
    }

    fn counter(&self) -> Stat {
        BUILT_IN_RULES
            .iter()
            .position(|name| *name == self.name)
            .map_or(Stat::CustomRuleFired, Stat::RuleFired)
    }

    /// The rule fires on `signal`: counted (`rules.<rule>`), with its action.
    pub fn fired(&self, signal: Value) -> Fired {
        stats::count(self.counter());
        Fired {
            rule: self.name.clone(),
            action: self.action,
            signal,
        }
    }
}

/// The enabled rules.
#[derive(Default)]
pub struct Rules {
    enabled: Vec<Rule>,
}

impl Rules {
    /// The built-in rule `name`, when enabled.
    pub fn built_in(&self, name: &str) -> Option<&Rule> {
        self.enabled
            .iter()
            .find(|rule| rule.custom.is_none() && rule.name == name)
    }

    fn custom(&self) -> impl Iterator<Item = &Rule> {
        self.enabled.iter().filter(|rule| rule.custom.is_some())
    }

    pub fn any_custom(&self) -> bool {
        self.custom().next().is_some()
    }
}

thread_local! {
    static RULES: GenerationCache<Rc<Rules>> = const { GenerationCache::new(Source::ActivityRules) };
}

/// The rules in force now.
pub fn rules() -> Rc<Rules> {
    RULES.with(|rules| rules.with(load, |rules| Rc::clone(rules)))
}

/// Custom rules' calls, kept for the life of the backend (their plans are).
fn call_text(function: &str) -> &'static str {
    thread_local! {
        static CALLS: std::cell::RefCell<HashMap<String, &'static str>> = Default::default();
    }
    CALLS.with(|calls| {
        *calls
            .borrow_mut()
            .entry(function.to_owned())
            .or_insert_with(|| {
                Box::leak(format!("select {function}($1::pg_catalog.jsonb)").into_boxed_str())
            })
    })
}

fn load() -> Rc<Rules> {
    let Some((relid, owner)) = owner_spi::relation_and_owner(RULES_TABLE) else {
        return Rc::default();
    };
    cache::watch(relid, Source::ActivityRules);
    let rows = owner_spi::select(
        Some(owner),
        include_str!("../queries/activity_rules_load.sql"),
        &[],
        |row| {
            let name: String = row.get(0)?;
            let enabled: bool = row.get(2)?;
            let is_custom: bool = row.get(7)?;
            let custom = if is_custom {
                let Some(function) = row.get::<String>(8) else {
                    refuse_rule(&name, "its function no longer exists")
                };
                Some(Custom {
                    call: call_text(&function),
                    run_as: row.get::<pg_sys::Oid>(9),
                    function_owner: row.get::<pg_sys::Oid>(10),
                })
            } else {
                None
            };
            let action = row
                .get::<String>(1)
                .and_then(|action| Action::from_name(&action))
                .unwrap_or_else(|| {
                    raise(Failure::ObjectsAltered {
                        what: format!("activity rule {name:?} has no known action"),
                    })
                });
            let prefix =
                |column, most: i32| row.get::<i32>(column).unwrap_or(most).clamp(0, most) as u8;
            Some(enabled.then(|| {
                Rule {
                    action,
                    threshold: row
                        .get::<i32>(3)
                        .map_or(1, |threshold| u64::try_from(threshold).unwrap_or(1)),
                    period: row.get::<i64>(4).unwrap_or(0).max(0),
                    ipv4_prefix: prefix(5, 32),
                    ipv6_prefix: prefix(6, 128),
                    custom,
                    name,
                }
            }))
        },
    );
    Rc::new(Rules {
        enabled: rows.into_iter().flatten().flatten().collect(),
    })
}

/// A custom rule that cannot be run safely stops sign-ins and refreshes (`55000`) until an
/// admin mends or disables it: it is never skipped silently, nor run with other rights.
fn refuse_rule(rule: &str, why: &str) -> ! {
    raise(Failure::Misconfigured {
        what: format!("activity rule {rule:?} cannot run: {why}"),
    })
}

/// The role a custom rule runs as, checked at each call (memberships change without a
/// change of the rules): it exists, is still an admin (or a superuser), and owns the
/// function (anyone else who could replace the function's body would act with its rights).
fn checked_run_as(
    rule: &str,
    run_as: Option<pg_sys::Oid>,
    function_owner: Option<pg_sys::Oid>,
) -> pg_sys::Oid {
    let Some(run_as) = run_as.filter(|role| roles::role_name(*role).is_some()) else {
        refuse_rule(rule, "the role it runs as no longer exists")
    };
    let admin = roles::is_superuser(run_as)
        || roles::role_oid(crate::api::revocation::ADMIN_ROLE)
            .is_some_and(|admin| roles::has_privileges_of(run_as, admin));
    if !admin {
        refuse_rule(
            rule,
            "the role it runs as is no longer a member of session_auth_admin",
        );
    }
    // Exactly its owner: whoever can replace the function's body must be the role it runs as.
    if function_owner != Some(run_as) {
        refuse_rule(rule, "its function is not owned by the role it runs as");
    }
    run_as
}

/// A rule that fired, and on what.
#[derive(Clone, Debug)]
pub struct Fired {
    pub rule: String,
    pub action: Action,
    pub signal: Value,
}

fn fire(rule: &Rule, signal: Value, fired: &mut Vec<Fired>) {
    fired.push(rule.fired(signal));
}

/// A sign-in or refresh (or a failure), as the rules see it.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    /// `sign_in` or `refresh`.
    pub kind: &'static str,
    /// Empty for a failure of no known user.
    pub user_id: &'a str,
    pub issuer: &'a str,
    /// `None`: a sign-in refused before its session was created, or a failure of no known
    /// session.
    pub session: Option<[u8; 16]>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub previous_ip: Option<IpAddr>,
    pub previous_user_agent: Option<&'a str>,
    pub aal: &'a str,
}

impl Event<'_> {
    /// The event as a custom rule receives it.
    pub fn as_custom_rule_argument(&self, signals: &[Fired]) -> Value {
        json!({
            "event": self.kind,
            "user_id": self.user_id,
            "issuer": self.issuer,
            "session_id": self.session.as_ref().map(crate::sessions::access_token::uuid_text),
            "ip": self.ip.map(|ip| ip.to_string()),
            "user_agent": self.user_agent,
            "previous_ip": self.previous_ip.map(|ip| ip.to_string()),
            "previous_user_agent": self.previous_user_agent,
            "aal": self.aal,
            "signals": signals.iter().map(|fired| fired.rule.as_str()).collect::<Vec<_>>(),
        })
    }
}

/// The rules that fire on a sign-in; `sessions_owner` runs the history query, which also
/// remembers this sign-in's device and network.
pub fn at_sign_in(event: &Event<'_>, sessions_owner: pg_sys::Oid) -> Vec<Fired> {
    let rules = rules();
    let mut fired = Vec::new();
    let new_device = rules.built_in(NEW_DEVICE);
    let new_network = rules.built_in(NEW_NETWORK);
    let too_many = rules.built_in(TOO_MANY_SESSIONS);
    if new_device.is_some() || new_network.is_some() || too_many.is_some() || rules.any_custom() {
        // Networks are remembered with the new_network rule's prefixes (/24, /48 unless changed).
        let network = event.ip.map(|ip| match new_network {
            Some(rule) => rule.network(ip),
            None => network_of(ip, 24, 48),
        });
        let period_seconds = too_many.map_or(0.0, |rule| rule.period as f64 / 1e6);
        let history = owner_spi::modify(
            sessions_owner,
            include_str!("../queries/sign_in_history.sql"),
            &[
                text_arg(event.user_id),
                text_arg(event.issuer),
                (pg_sys::TEXTOID, event.user_agent.into_datum()),
                (pg_sys::TEXTOID, network.clone().into_datum()),
                (pg_sys::FLOAT8OID, period_seconds.into_datum()),
            ],
            |row| {
                Some((
                    row.get::<bool>(0)?,
                    row.get::<bool>(1)?,
                    row.get::<bool>(2)?,
                    row.get::<i64>(3)?,
                ))
            },
        )
        .1
        .into_iter()
        .next()
        .flatten();
        if let Some((known_before, device_known, network_known, recent)) = history {
            if let (Some(rule), Some(agent), true) = (new_device, event.user_agent, known_before) {
                if !device_known {
                    fire(rule, json!({ "user_agent": agent }), &mut fired);
                }
            }
            if let (Some(rule), Some(network), true) = (new_network, &network, known_before) {
                if !network_known {
                    fire(rule, json!({ "network": network }), &mut fired);
                }
            }
            if let Some(rule) = too_many {
                // This sign-in's session is not written yet.
                let sessions = recent.saturating_add(1);
                if u64::try_from(sessions).unwrap_or(0) > rule.threshold {
                    fire(
                        rule,
                        json!({ "sessions": sessions, "threshold": rule.threshold,
                                "period_seconds": rule.period / 1_000_000 }),
                        &mut fired,
                    );
                }
            }
        }
    }
    custom_rules(&rules, event, &mut fired);
    fired
}

/// The rules that fire on a refresh of a session last active (refreshed or signed in) at
/// `last_activity`, at `now` (µs).
pub fn at_refresh(event: &Event<'_>, last_activity: i64, now: i64) -> Vec<Fired> {
    let rules = rules();
    let mut fired = Vec::new();
    if let (Some(rule), Some(agent), Some(previous)) = (
        rules.built_in(SESSION_DEVICE_CHANGED),
        event.user_agent,
        event.previous_user_agent,
    ) {
        if agent != previous {
            fire(
                rule,
                json!({ "user_agent": agent, "previous_user_agent": previous }),
                &mut fired,
            );
        }
    }
    if let (Some(ip), Some(previous)) = (event.ip, event.previous_ip) {
        if let Some(rule) = rules.built_in(SESSION_NETWORK_CHANGED) {
            let (network, before) = (rule.network(ip), rule.network(previous));
            if network != before {
                fire(
                    rule,
                    json!({ "network": network, "previous_network": before }),
                    &mut fired,
                );
            }
        }
        if let Some(rule) = rules.built_in(CONCURRENT_NETWORKS) {
            let (network, before) = (rule.network(ip), rule.network(previous));
            let since = now.saturating_sub(last_activity);
            if network != before && since < rule.period {
                fire(
                    rule,
                    json!({ "network": network, "previous_network": before,
                            "seconds_apart": since as f64 / 1e6 }),
                    &mut fired,
                );
            }
        }
    }
    custom_rules(&rules, event, &mut fired);
    fired
}

/// Runs each custom rule's function, as the role that wrote the rule, on the event.
fn custom_rules(rules: &Rules, event: &Event<'_>, fired: &mut Vec<Fired>) {
    if !rules.any_custom() {
        return;
    }
    let argument = event.as_custom_rule_argument(fired).to_string();
    for rule in rules.custom() {
        let Some(custom) = &rule.custom else {
            continue;
        };
        let (call, run_as) = (
            custom.call,
            checked_run_as(&rule.name, custom.run_as, custom.function_owner),
        );
        // Read-only, and in a subtransaction: whatever the function raises becomes this
        // rule's 55000, never an error a caller could mistake for another (a forged 28000).
        let verdict = transaction::try_in_subtransaction(|| {
            transaction::read_only(|| {
                owner_spi::select(Some(run_as), call, &[text_arg(&argument)], |row| {
                    row.get::<bool>(0)
                })
            })
        })
        .unwrap_or_else(|message| {
            let shown: String = message.chars().take(200).collect();
            refuse_rule(&rule.name, &format!("its function failed: {shown}"))
        });
        if verdict.first() == Some(&Some(true)) {
            fire(rule, json!({ "function": true }), fired);
        }
    }
}
