//! What a warm revocation check does, alone: the three HashMap lookups of src/revocation.rs
//! (session id -> bool, jti -> bool, sub -> Option<UserCutoff>, std's SipHash), over maps
//! holding N answers each, keys looked up in an order unrelated to insertion (as tokens
//! arrive). Prints the median ns per token (3 lookups) of 7 passes for each N.
//!
//!     rustc -O lookups.rs && ./lookups 100 10000
//!
//! With 100 answers the maps stay in L1/L2; with 10,000 (the cap, about 3 MB with the keys)
//! every lookup goes to L3 or memory, so its cost depends on what else uses the cache.
use std::collections::HashMap;
use std::time::Instant;

#[derive(Clone, Copy)]
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

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a number")).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for n in if sizes.is_empty() { vec![100, 10_000] } else { sizes } {
        let mut sessions: HashMap<[u8; 16], bool> = HashMap::new();
        let mut tokens: HashMap<String, bool> = HashMap::new();
        let mut users: HashMap<String, Option<UserCutoff>> = HashMap::new();
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            let mut session = [0u8; 16];
            session[..8].copy_from_slice(&next(&mut state).to_le_bytes());
            session[8..].copy_from_slice(&next(&mut state).to_le_bytes());
            let (jti, sub) = (uuid_text(&mut state), uuid_text(&mut state));
            sessions.insert(session, false);
            tokens.insert(jti.clone(), false);
            users.insert(sub.clone(), None);
            keys.push((session, jti, sub));
        }
        // Look up in a shuffled order (Fisher-Yates).
        for i in (1..keys.len()).rev() {
            let j = (next(&mut state) % (i as u64 + 1)) as usize;
            keys.swap(i, j);
        }
        let passes = 7;
        let reps = (100_000 / n).max(1);
        let mut per_token = Vec::new();
        let mut found = 0usize;
        for _ in 0..passes {
            let t = Instant::now();
            for _ in 0..reps {
                for (session, jti, sub) in &keys {
                    found += tokens.contains_key(jti.as_str()) as usize;
                    found += sessions.contains_key(session) as usize;
                    found += users.get(sub.as_str()).is_some() as usize;
                }
            }
            per_token.push(t.elapsed().as_nanos() as f64 / (reps * n) as f64);
        }
        per_token.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(found, 3 * n * reps * passes);
        println!(
            "{n:>6} answers per kind: {:7.1} ns per token (3 lookups), min {:.1}, max {:.1}",
            per_token[passes / 2],
            per_token[0],
            per_token[passes - 1]
        );
    }
}
