//! What a warm revocation check does, alone, in plain Rust (no PostgreSQL), over maps holding N
//! answers per kind, keys looked up in an order unrelated to insertion (as tokens arrive):
//!
//! - "3 lookups": the three HashMap lookups of src/revocation.rs (session id -> bool,
//!   jti -> bool, canonical sub -> Option<UserCutoff>; std's SipHash), by borrowed key.
//! - "warm path": what `Answers::known_for` + the core's `is_revoked` over `Known` do per token
//!   when every answer is kept: parse session_id (twice), `jti.to_owned()`,
//!   `canonical_user_id(sub)` (twice), the three lookups, a clone of the jti and of the user id
//!   for `Known`, and the key comparisons. parse_uuid and canonical_user_id are copies of
//!   core/src/identity.rs. Claims are given as strings (the JSON lookups are left out).
//!
//! Prints the median ns per token of 7 passes for each N.
//!
//!     rustc -O lookups.rs && ./lookups 100 10000
//!
//! With 100 answers the maps stay in L1/L2; with 10,000 (the cap: about 3 MB with UUID keys,
//! 5 MB with 128-byte ones) every lookup goes to L3 or memory, so its cost depends on what else
//! uses the cache.
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq)]
#[allow(dead_code)]
struct UserCutoff {
    revoked_before: Option<f64>,
    others_revoked_before: Option<f64>,
    keep_session: Option<[u8; 16]>,
}

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

/// Copy of core/src/identity.rs parse_uuid.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let mut rest = text.as_bytes();
    let braces = rest.first() == Some(&b'{');
    if braces {
        rest = &rest[1..];
    }
    let mut bytes = [0u8; 16];
    for (index, byte) in bytes.iter_mut().enumerate() {
        let [high, low, tail @ ..] = rest else {
            return None;
        };
        let digit = |c: &u8| (*c as char).to_digit(16);
        *byte = (digit(high)? * 16 + digit(low)?) as u8;
        rest = tail;
        if index % 2 == 1 && index < 15 && rest.first() == Some(&b'-') {
            rest = &rest[1..];
        }
    }
    if braces {
        rest = rest.strip_prefix(b"}")?;
    }
    rest.is_empty().then_some(bytes)
}

/// Copy of core/src/identity.rs canonical_user_id.
fn canonical_user_id(sub: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let Some(bytes) = parse_uuid(sub) else {
        return sub.to_owned();
    };
    let mut text = String::with_capacity(36);
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(HEX[usize::from(byte >> 4)] as char);
        text.push(HEX[usize::from(byte & 0xf)] as char);
    }
    text
}

struct Maps {
    sessions: HashMap<[u8; 16], bool>,
    tokens: HashMap<String, bool>,
    users: HashMap<String, Option<UserCutoff>>,
}

/// known_for (all answers kept) followed by is_revoked over the Known it returns.
fn warm_check(maps: &Maps, session_text: &str, jti: &str, sub: &str) -> bool {
    // known_for
    let session = parse_uuid(session_text);
    let jti_owned = jti.to_owned();
    let user = canonical_user_id(sub);
    let known_session = session.and_then(|s| maps.sessions.get(&s).map(|&r| (s, r)));
    let known_token = maps.tokens.get(&jti_owned).map(|&r| (jti_owned.clone(), r));
    let known_user = maps.users.get(&user).map(|&c| (user.clone(), c));
    assert!(known_session.is_some() && known_token.is_some() && known_user.is_some());
    // is_revoked over Known
    if known_token.as_ref().is_none_or(|(k, r)| k != jti || *r) {
        return true;
    }
    let session = parse_uuid(session_text);
    if known_session.as_ref().is_none_or(|(k, r)| Some(*k) != session || *r) {
        return true;
    }
    let asked = canonical_user_id(sub);
    match &known_user {
        Some((k, cutoff)) if *k == asked => cutoff.is_some(),
        _ => true,
    }
}

fn median_of(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a number")).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for n in if sizes.is_empty() { vec![100, 10_000] } else { sizes } {
        let mut maps = Maps { sessions: HashMap::new(), tokens: HashMap::new(), users: HashMap::new() };
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            let (session, jti, sub) = (uuid_text(&mut state), uuid_text(&mut state), uuid_text(&mut state));
            maps.sessions.insert(parse_uuid(&session).unwrap(), false);
            maps.tokens.insert(jti.clone(), false);
            maps.users.insert(canonical_user_id(&sub), None);
            let session_bytes = parse_uuid(&session).unwrap();
            keys.push((session, session_bytes, jti, sub));
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
                    found += maps.users.get(sub.as_str()).is_some() as usize;
                }
            }
            lookups.push(t.elapsed().as_nanos() as f64 / (reps * n) as f64);
            let t = Instant::now();
            for _ in 0..reps {
                for (session_text, _, jti, sub) in &keys {
                    found += !black_box(warm_check(&maps, session_text, jti, sub)) as usize;
                }
            }
            whole.push(t.elapsed().as_nanos() as f64 / (reps * n) as f64);
        }
        assert_eq!(found, 4 * n * reps * passes);
        let (m, lo, hi) = median_of(lookups);
        println!("{n:>6} answers per kind: 3 lookups {m:6.1} ns per token (min {lo:.1}, max {hi:.1})");
        let (m, lo, hi) = median_of(whole);
        println!("{n:>6} answers per kind: warm path {m:6.1} ns per token (min {lo:.1}, max {hi:.1})");
    }
}
