//! What a warm revocation check does, alone, in plain Rust (no PostgreSQL), over maps holding N
//! answers per kind, keys looked up in an order unrelated to insertion (as tokens arrive):
//!
//! - "3 lookups": the three HashMap lookups of src/revocation.rs (session id -> bool,
//!   jti -> bool, canonical sub -> Option<UserCutoff>; std's SipHash), by borrowed key.
//! - "warm path": what `claims_revoked` in src/revocation.rs does per token when every answer
//!   is kept: `RevocationKeys::of` on the claims, the three lookups, and the core's rules —
//!   calling pg_session_auth_core itself, so it follows the code it measures.
//!
//! - "filter screen": what a check costs when the shared revocation filter clears the token:
//!   `RevocationKeys::of` and probing each key in a 2 MB filter holding 1.11M other keys (as in
//!   the benchmark's bench_full), with the core's own `RevocationFilter`.
//!
//! Prints the median ns per token of 7 passes for each N. Built as the `revocation_lookups`
//! binary of bench/raw (`cargo build --release --manifest-path bench/raw/Cargo.toml`).
//!
//! With 100 answers the maps stay in L1/L2; with 10,000 (the cap: about 3 MB with UUID keys,
//! 5 MB with 128-byte ones) every lookup goes to L3 or memory, so its cost depends on what else
//! uses the cache.
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use pg_session_auth_core::identity::{canonical_user_id, parse_uuid};
use pg_session_auth_core::revocation::{RevocationKeys, RevocationSource, UserCutoff};
use pg_session_auth_core::revocation_filter::{FilterKey, RevocationFilter};
use pg_session_auth_core::Claims;
use serde_json::json;

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn uuid_text(state: &mut u64) -> String {
    let (a, b) = (next(state), next(state));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

struct Maps {
    sessions: HashMap<[u8; 16], bool>,
    tokens: HashMap<String, bool>,
    users: HashMap<String, Option<UserCutoff>>,
}

/// The answers for one token's keys, as src/revocation.rs `Known` holds them.
struct Known {
    session: bool,
    token: bool,
    user: Option<UserCutoff>,
}

impl RevocationSource for Known {
    fn session_revoked(&mut self, _: &[u8; 16]) -> bool {
        self.session
    }
    fn token_revoked(&mut self, _: &str) -> bool {
        self.token
    }
    fn user_cutoff(&mut self, _: &str, _: &str) -> Option<UserCutoff> {
        self.user
    }
}

/// What `claims_revoked` does per token when every answer is kept: the keys, once, from the
/// claims; the three lookups; the core's rules over the answers.
fn warm_check(maps: &Maps, claims: &Claims) -> bool {
    let keys = RevocationKeys::of(claims);
    let mut known = Known {
        session: keys
            .session
            .and_then(|s| maps.sessions.get(&s).copied())
            .expect("kept"),
        token: keys
            .jti
            .and_then(|j| maps.tokens.get(j).copied())
            .expect("kept"),
        user: keys
            .user
            .as_deref()
            .and_then(|u| maps.users.get(u).copied())
            .expect("kept"),
    };
    keys.revoked_by(&mut known)
}

fn median_of(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for n in if sizes.is_empty() {
        vec![100, 10_000]
    } else {
        sizes
    } {
        let mut maps = Maps {
            sessions: HashMap::new(),
            tokens: HashMap::new(),
            users: HashMap::new(),
        };
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            let (session, jti, sub) = (
                uuid_text(&mut state),
                uuid_text(&mut state),
                uuid_text(&mut state),
            );
            maps.sessions.insert(parse_uuid(&session).unwrap(), false);
            maps.tokens.insert(jti.clone(), false);
            maps.users.insert(canonical_user_id(&sub), None);
            let session_bytes = parse_uuid(&session).unwrap();
            let serde_json::Value::Object(claims) =
                json!({"session_id": session, "jti": jti, "sub": sub})
            else {
                unreachable!("an object literal")
            };
            keys.push((claims, session_bytes, jti, sub));
        }
        // Look up in a shuffled order (Fisher-Yates).
        for i in (1..keys.len()).rev() {
            let j = (next(&mut state) % (i as u64 + 1)) as usize;
            keys.swap(i, j);
        }
        let passes = 7;
        let reps = (100_000 / n).max(1);
        let (mut lookups, mut whole) = (Vec::new(), Vec::new());
        let mut found = 0usize;
        for _ in 0..passes {
            let t = Instant::now();
            for _ in 0..reps {
                for (_, session, jti, sub) in &keys {
                    found += maps.tokens.contains_key(jti.as_str()) as usize;
                    found += maps.sessions.contains_key(session) as usize;
                    found += maps.users.contains_key(sub.as_str()) as usize;
                }
            }
            lookups.push(t.elapsed().as_nanos() as f64 / (reps * n) as f64);
            let t = Instant::now();
            for _ in 0..reps {
                for (claims, _, _, _) in &keys {
                    found += !black_box(warm_check(&maps, claims)) as usize;
                }
            }
            whole.push(t.elapsed().as_nanos() as f64 / (reps * n) as f64);
        }
        assert_eq!(found, 4 * n * reps * passes);
        let (m, lo, hi) = median_of(lookups);
        println!(
            "{n:>6} answers per kind: 3 lookups {m:6.1} ns per token (min {lo:.1}, max {hi:.1})"
        );
        let (m, lo, hi) = median_of(whole);
        println!(
            "{n:>6} answers per kind: warm path {m:6.1} ns per token (min {lo:.1}, max {hi:.1})"
        );
    }
    filter_screen(&mut state);
}

/// A token cleared by a 2 MB filter holding 1,000,000 sessions, 100,000 users and 10,000 jti.
fn filter_screen(state: &mut u64) {
    let words: Vec<AtomicU64> = (0..2 * 1024 * 1024 / 8)
        .map(|_| AtomicU64::new(0))
        .collect();
    let filter = RevocationFilter::new(&words, [next(state), next(state)]);
    for _ in 0..1_000_000 {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&next(state).to_le_bytes());
        id[8..].copy_from_slice(&next(state).to_le_bytes());
        filter.insert(FilterKey::Session(&id));
    }
    for _ in 0..100_000 {
        filter.insert(FilterKey::User(&uuid_text(state)));
    }
    for _ in 0..10_000 {
        filter.insert(FilterKey::Token(&uuid_text(state)));
    }
    let tokens: Vec<Claims> = (0..10_000)
        .map(|_| {
            let serde_json::Value::Object(claims) = json!({
                "session_id": uuid_text(state), "jti": uuid_text(state), "sub": uuid_text(state)
            }) else {
                unreachable!("an object literal")
            };
            claims
        })
        .collect();
    let (mut times, mut passed) = (Vec::new(), 0usize);
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..10 {
            for claims in &tokens {
                let keys = RevocationKeys::of(black_box(claims));
                passed += keys.filter_keys().any(|key| filter.may_contain(key)) as usize;
            }
        }
        times.push(t.elapsed().as_nanos() as f64 / (10 * tokens.len()) as f64);
    }
    let (m, lo, hi) = median_of(times);
    println!(
        "  1.11M keys in 2 MB: filter screen {m:6.1} ns per token (min {lo:.1}, max {hi:.1}); \
         {:.2}% of unrevoked tokens passed on to a lookup",
        passed as f64 * 100.0 / (70 * tokens.len()) as f64
    );
}
