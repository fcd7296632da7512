//! Rejections, which write nothing (their transactions abort): counted by reason, kept in a
//! bounded ring of the most recent (`auth.recent_rejections()`), optionally logged, and
//! counted per source for the rules that fire on failures (`failed_refreshes` per address,
//! `use_after_sign_out` per subject) — all in memory that no rollback undoes.

use std::net::IpAddr;

use pg_session_auth_core::activity::Window;
use serde_json::json;

use crate::activity::memory::{self, load, store, Memory, ENTRY_WORDS, RING_ENTRIES, WINDOWS};
use crate::activity::rules::{self, Event, FAILED_REFRESHES, USE_AFTER_SIGN_OUT};
use crate::activity::stats::{self, Stat, REFRESH_REASONS, TOKEN_REASONS};
use crate::activity::{actions, client_ip};
use crate::gucs;
use crate::pg::{clock, locks, roles, transaction};

/// Why: a token's rejection or a refresh's refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Token(usize),
    Refresh(usize),
}

impl Reason {
    /// The reason of `invalid token: <reason>` or of a refused refresh.
    pub fn of_token(reason: &str) -> Reason {
        Reason::Token(
            TOKEN_REASONS
                .iter()
                .position(|known| *known == reason)
                .unwrap_or(0),
        )
    }

    pub fn of_refresh(reason: &str) -> Reason {
        Reason::Refresh(
            REFRESH_REASONS
                .iter()
                .position(|known| *known == reason)
                .unwrap_or(0),
        )
    }

    fn code(self) -> u64 {
        match self {
            Reason::Token(index) => index as u64,
            Reason::Refresh(index) => (TOKEN_REASONS.len() + index) as u64,
        }
    }

    fn from_code(code: u64) -> &'static str {
        let code = code as usize;
        TOKEN_REASONS
            .get(code)
            .or_else(|| REFRESH_REASONS.get(code - TOKEN_REASONS.len().min(code)))
            .copied()
            .unwrap_or("unknown")
    }
}

/// A rejection as it is recorded.
pub struct Refused<'a> {
    pub reason: Reason,
    /// The kid the token named.
    pub kid: Option<&'a str>,
    /// The subject and issuer, only when the signature (or the refresh token's tag) was good.
    pub subject: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub session: Option<[u8; 16]>,
    /// The request's address (`client_ip::of_request`): the connection's, or the trusted
    /// header's — never an argument the caller chose.
    pub ip: Option<IpAddr>,
}

const KID_BYTES: usize = 64;
const SUB_BYTES: usize = 128;
const IP_BYTES: usize = 48;

/// Counts and records a rejection about to be raised. Never raises itself.
pub fn rejected(refused: Refused<'_>) {
    if !gucs::track_activity() {
        return;
    }
    match refused.reason {
        Reason::Token(index) => {
            stats::count(Stat::Rejections);
            stats::count(Stat::Rejected(index));
        }
        Reason::Refresh(index) => stats::count(Stat::RefreshRefused(index)),
    }
    let memory = memory::memory();
    let at = clock::now_unix_micros();
    write_entry(&memory, &refused, at);
    if gucs::log_rejections() {
        pgrx::log!(
            "pg_session_auth: rejected: reason={} kid={} sub={}",
            Reason::from_code(refused.reason.code()),
            shown(refused.kid),
            shown(refused.subject),
        );
    }
    count_for_rules(&memory, &refused, at);
}

/// Attacker-chosen text in the log: cut short and escaped.
fn shown(text: Option<&str>) -> String {
    text.map_or_else(
        || "-".to_owned(),
        |text| format!("{:?}", cut(text, KID_BYTES)),
    )
}

/// `text` cut to at most `bytes` at a character boundary.
fn cut(text: &str, bytes: usize) -> &str {
    let mut end = text.len().min(bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn write_bytes(words: &[std::sync::atomic::AtomicU64], text: &[u8]) {
    for (word, chunk) in words
        .iter()
        .zip(text.chunks(8).chain(std::iter::repeat(&[][..])))
    {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        store(word, u64::from_le_bytes(bytes));
    }
}

fn read_bytes(words: &[std::sync::atomic::AtomicU64], length: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = words
        .iter()
        .flat_map(|word| load(word).to_le_bytes())
        .collect();
    bytes.truncate(length);
    bytes
}

// Entry words: 0 number (+1; 0 = empty), 1 at, 2 database | role << 32, 3 pid | reason << 32
// | has session << 40, 4 lengths (kid | sub << 8 | ip << 16), 5-6 session, 8.. kid, sub, ip.
const KID_AT: usize = 8;
const SUB_AT: usize = KID_AT + KID_BYTES / 8;
const IP_AT: usize = SUB_AT + SUB_BYTES / 8;
const _: () = assert!(IP_AT + IP_BYTES / 8 <= ENTRY_WORDS);

fn write_entry(memory: &Memory, refused: &Refused<'_>, at: i64) {
    let kid = cut(refused.kid.unwrap_or_default(), KID_BYTES);
    let sub = cut(refused.subject.unwrap_or_default(), SUB_BYTES);
    let ip = refused.ip.map(|ip| ip.to_string()).unwrap_or_default();
    let database = u64::from(locks::my_database().to_u32());
    let role = u64::from(roles::current_user().to_u32());
    let pid = u64::from(locks::my_pid().unsigned_abs());
    memory.locked(|| {
        let number = load(memory.ring_written());
        let entry = memory.ring_entry(number as usize);
        store(&entry[0], 0);
        store(&entry[1], at as u64);
        store(&entry[2], database | role << 32);
        store(
            &entry[3],
            pid | refused.reason.code() << 32 | u64::from(refused.session.is_some()) << 40,
        );
        store(
            &entry[4],
            kid.len() as u64 | (sub.len() as u64) << 8 | (ip.len() as u64) << 16,
        );
        let session = refused.session.unwrap_or_default();
        write_bytes(&entry[5..7], &session);
        write_bytes(&entry[KID_AT..SUB_AT], kid.as_bytes());
        write_bytes(&entry[SUB_AT..IP_AT], sub.as_bytes());
        write_bytes(&entry[IP_AT..IP_AT + IP_BYTES / 8], ip.as_bytes());
        store(&entry[0], number + 1);
        store(memory.ring_written(), number + 1);
    });
}

/// A rejection as `auth.recent_rejections()` shows it.
pub struct Recent {
    pub at: i64,
    pub reason: &'static str,
    pub kid: Option<String>,
    pub sub: Option<String>,
    pub session: Option<[u8; 16]>,
    pub ip: Option<String>,
    pub role: pgrx::pg_sys::Oid,
    pub pid: i32,
}

/// The rejections kept, of this database, newest first.
pub fn recent() -> Vec<Recent> {
    let memory = memory::memory();
    let database = u64::from(locks::my_database().to_u32());
    let text =
        |bytes: Vec<u8>| (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned());
    memory.locked(|| {
        let written = load(memory.ring_written());
        let kept = written.min(RING_ENTRIES as u64);
        (0..kept)
            .filter_map(|back| {
                let number = written - 1 - back;
                let entry = memory.ring_entry(number as usize);
                if load(&entry[0]) != number + 1 || load(&entry[2]) & 0xffff_ffff != database {
                    return None;
                }
                let word3 = load(&entry[3]);
                let lengths = load(&entry[4]);
                let length =
                    |shift: u64, most: usize| ((lengths >> shift) & 0xff).min(most as u64) as usize;
                let session: [u8; 16] = read_bytes(&entry[5..7], 16).try_into().ok()?;
                Some(Recent {
                    at: load(&entry[1]) as i64,
                    reason: Reason::from_code((word3 >> 32) & 0xff),
                    kid: text(read_bytes(&entry[KID_AT..SUB_AT], length(0, KID_BYTES))),
                    sub: text(read_bytes(&entry[SUB_AT..IP_AT], length(8, SUB_BYTES))),
                    session: (word3 >> 40 & 1 == 1).then_some(session),
                    ip: text(read_bytes(
                        &entry[IP_AT..IP_AT + IP_BYTES / 8],
                        length(16, IP_BYTES),
                    )),
                    role: pgrx::pg_sys::Oid::from((load(&entry[2]) >> 32) as u32),
                    pid: (word3 & 0xffff_ffff) as i32,
                })
            })
            .collect()
    })
}

/// Counts the rejection in its window for `failed_refreshes` (an invalid refresh token, per
/// address) or `use_after_sign_out` (a revoked token, per subject); a rule whose threshold
/// is reached has its event and notification written independently (the rejection's
/// transaction aborts).
fn count_for_rules(memory: &Memory, refused: &Refused<'_>, at: i64) {
    if transaction::in_parallel_worker() || locks::recovery_in_progress() {
        return;
    }
    let database = locks::my_database().to_u32().to_le_bytes();
    let rule_name = match refused.reason {
        Reason::Refresh(0) => FAILED_REFRESHES,
        Reason::Token(index) if TOKEN_REASONS[index] == "revoked" => USE_AFTER_SIGN_OUT,
        _ => return,
    };
    let rules = rules::rules();
    let Some(rule) = rules.built_in(rule_name) else {
        return;
    };
    let key = if rule_name == FAILED_REFRESHES {
        // Per network (the rule's prefixes): an IPv6 host rotating through its /64 is one.
        let Some(ip) = refused.ip else { return };
        memory.key_of(&[b"ip", &database, rule.network(ip).as_bytes()])
    } else {
        let Some(subject) = refused.subject else {
            return;
        };
        memory.key_of(&[
            b"sub",
            &database,
            refused.issuer.unwrap_or_default().as_bytes(),
            subject.as_bytes(),
        ])
    };
    let Some(count) = count_in_window(memory, key, at, rule.period, rule.threshold) else {
        return;
    };
    let event = Event {
        kind: if rule_name == FAILED_REFRESHES {
            "refresh"
        } else {
            "token"
        },
        user_id: refused.subject.unwrap_or_default(),
        issuer: refused.issuer.unwrap_or_default(),
        session: refused.session,
        ip: refused.ip,
        user_agent: None,
        previous_ip: None,
        previous_user_agent: None,
        aal: "",
    };
    let fired = [
        rule.fired(json!({ "count": count, "threshold": rule.threshold,
                        "period_seconds": rule.period / 1_000_000 })),
    ];
    let events = actions::events(&event, &fired);
    crate::durable::write_independently(crate::durable::Writes {
        ending: None,
        events,
    });
}

/// Counts one event in the window of `key`; `Some(count)` when this one reaches the
/// threshold (once per window).
fn count_in_window(memory: &Memory, key: u64, at: i64, period: i64, threshold: u64) -> Option<u64> {
    const PROBES: usize = 8;
    memory.locked(|| {
        let home = (key as usize) % WINDOWS;
        let slots = (0..PROBES).map(|probe| memory.window(home + probe));
        // The key's own window, else a free one, else the one started longest ago.
        let mut chosen = None;
        let mut oldest: Option<(&[std::sync::atomic::AtomicU64], u64)> = None;
        for slot in slots {
            let slot_key = load(&slot[0]);
            if slot_key == key {
                chosen = Some(slot);
                break;
            }
            if slot_key == 0 && chosen.is_none() {
                chosen = Some(slot);
            }
            let started = load(&slot[1]);
            if oldest.is_none_or(|(_, at)| started < at) {
                oldest = Some((slot, started));
            }
        }
        let slot = chosen.or(oldest.map(|(slot, _)| slot))?;
        let mut window = if load(&slot[0]) == key {
            Window {
                started_at: load(&slot[1]) as i64,
                count: load(&slot[2]),
                fired: load(&slot[3]) == 1,
            }
        } else {
            Window::default()
        };
        let fires = window.count(at, period, threshold);
        store(&slot[0], key);
        store(&slot[1], window.started_at as u64);
        store(&slot[2], window.count);
        store(&slot[3], u64::from(window.fired));
        fires.then_some(window.count)
    })
}

/// Where a token rejection is recorded from: the request's address.
pub fn request_address() -> Option<IpAddr> {
    client_ip::of_request()
}
