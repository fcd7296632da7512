//! Plain-Rust cost of the checks `auth.verify` performs, on the benchmark's own tokens.
//!
//!     raw_bench --dir DIR [--runs N] [--algs HS256,ES256,...] [--serve]
//!
//! Without --algs it takes every algorithm the core accepts (`Algorithm::ALL`: HS256/384/512,
//! RS256/384/512, PS256/384/512, ES256, ES384, EdDSA) that has a key file in DIR. For each
//! algorithm it reads `DIR/<alg>.key` (the key text given to `auth.add_key`, kid
//! `bench-<alg in lower case>`) and `DIR/<alg>.tokens` (one compact JWS a line), builds one
//! keyring holding every algorithm's key (as the server's cached keyring does), makes one
//! untimed warm-up pass that also checks every token verifies, then times N passes over all
//! tokens of each measure. Output, one line per algorithm and measure, µs per token of each
//! timed pass:
//!
//!     RAW <alg> <measure> <tokens> <us_pass1> <us_pass2> ...
//!
//! Measures:
//!   verify  pg_session_auth_core::verify: size check, parse, key choice, signature, payload
//!           decode, JSON, claim rules (what auth.verify runs, minus the server glue)
//!   sig     parse_compact + Keyring::select + VerifyingKey::verify: the bare signature check
//!   parse   parse_compact alone (split, base64url, header JSON)
//!
//! With --serve it prints READY after the warm-up and then answers each stdin line
//! "ALG MEASURE" with the µs per token of one timed pass (how bench/bench.py drives it).

use std::hint::black_box;
use std::io::{BufRead, Write};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pg_session_auth_core::{
    parse_compact, parse_key, verify, Algorithm, ClaimRules, Keyring, Policy,
};

/// The extension's defaults (pg_session_auth.max_token_bytes, .leeway; no issuer/audience).
const MAX_TOKEN_BYTES: usize = 8192;
const LEEWAY: i64 = 30;

fn usage() -> ! {
    eprintln!("usage: raw_bench --dir DIR [--runs N] [--algs HS256,ES256,...] [--serve]");
    std::process::exit(2)
}

/// One timed pass of `measure` over `list`: µs per token.
fn pass(list: &[String], measure: &dyn Fn(&str) -> bool) -> f64 {
    let start = Instant::now();
    let mut ok = 0usize;
    for token in list {
        ok += usize::from(measure(black_box(token.as_str())));
    }
    let elapsed = start.elapsed();
    black_box(ok);
    elapsed.as_secs_f64() * 1e6 / list.len() as f64
}

fn kid(alg: Algorithm) -> String {
    format!("bench-{}", alg.name().to_lowercase())
}

/// One measured way of checking a token: true when it is accepted.
type TokenCheck<'a> = dyn Fn(&str) -> bool + 'a;

fn main() {
    let mut dir = None;
    let mut runs = 5usize;
    let mut serve = false;
    let mut algs: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = Some(args.next().unwrap_or_else(|| usage())),
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--serve" => serve = true,
            "--algs" => algs = Some(args.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    let dir = dir.unwrap_or_else(|| usage());
    let algs: Vec<Algorithm> = match algs {
        Some(list) => list
            .split(',')
            .filter(|name| !name.is_empty())
            .map(|name| {
                Algorithm::from_name(name).unwrap_or_else(|| panic!("unknown algorithm {name}"))
            })
            .collect(),
        None => Algorithm::ALL
            .into_iter()
            .filter(|alg| std::path::Path::new(&format!("{dir}/{}.key", alg.name())).exists())
            .collect(),
    };
    assert!(
        !algs.is_empty(),
        "no algorithm to time (no <alg>.key in {dir})"
    );

    let mut keyring = Keyring::new();
    let mut tokens = Vec::new();
    for &alg in &algs {
        let key_text = std::fs::read_to_string(format!("{dir}/{}.key", alg.name()))
            .unwrap_or_else(|e| panic!("{alg} key: {e}"));
        let stored = parse_key(alg, &key_text).unwrap_or_else(|e| panic!("{alg} key: {e}"));
        keyring
            .insert(&kid(alg), alg, &stored, false)
            .unwrap_or_else(|e| panic!("{alg} key: {e}"));
        let list: Vec<String> = std::fs::read_to_string(format!("{dir}/{}.tokens", alg.name()))
            .unwrap_or_else(|e| panic!("{alg} tokens: {e}"))
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect();
        assert!(!list.is_empty(), "{alg}: no tokens");
        tokens.push((alg, list));
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let policy = Policy {
        max_token_bytes: MAX_TOKEN_BYTES,
        claims: ClaimRules {
            leeway: LEEWAY,
            ..ClaimRules::default()
        },
    };

    let full = |token: &str| verify(token, &keyring, &policy, now).is_ok();
    let sig = |token: &str| {
        let Ok(jws) = parse_compact(token, MAX_TOKEN_BYTES) else {
            return false;
        };
        let Ok(entry) = keyring.select(jws.header.kid.as_deref()) else {
            return false;
        };
        entry
            .key
            .verify(jws.signing_input.as_bytes(), &jws.signature)
    };
    let parse = |token: &str| parse_compact(token, MAX_TOKEN_BYTES).is_ok();
    let measures: [(&str, &TokenCheck); 3] = [("verify", &full), ("sig", &sig), ("parse", &parse)];

    // Warm-up, and proof that every token is accepted (a rejected token would time an error path).
    for (alg, list) in &tokens {
        for (name, measure) in &measures {
            let ok = list
                .iter()
                .filter(|t| measure(black_box(t.as_str())))
                .count();
            if ok != list.len() {
                for token in list {
                    if let Err(e) = verify(token, &keyring, &policy, now) {
                        panic!("{alg} {name}: {ok}/{} ok; e.g. {e}", list.len());
                    }
                }
                panic!("{alg} {name}: only {ok}/{} tokens pass", list.len());
            }
        }
    }

    if serve {
        // Timing server for the driver: after "READY", each input line "ALG MEASURE" gets one
        // timed pass over all of ALG's tokens, answered with µs per token. Lets the driver pair
        // each SQL run with a Rust run taken right beside it.
        println!("READY");
        let stdin = std::io::stdin();
        let mut line = String::new();
        while {
            line.clear();
            stdin.lock().read_line(&mut line).expect("stdin") > 0
        } {
            let mut words = line.split_whitespace();
            let (Some(alg), Some(name)) = (words.next(), words.next()) else {
                continue;
            };
            let a = tokens.iter().position(|(x, _)| x.name() == alg);
            let m = measures.iter().position(|(x, _)| *x == name);
            let (Some(a), Some(m)) = (a, m) else {
                println!("ERROR unknown algorithm or measure: {}", line.trim());
                continue;
            };
            println!("{:.4}", pass(&tokens[a].1, measures[m].1));
            std::io::stdout().flush().expect("stdout");
        }
        return;
    }

    let mut timings = vec![vec![Vec::with_capacity(runs); measures.len()]; tokens.len()];
    for _ in 0..runs {
        for (a, (_, list)) in tokens.iter().enumerate() {
            for (m, (_, measure)) in measures.iter().enumerate() {
                timings[a][m].push(pass(list, *measure));
            }
        }
    }

    for (a, (alg, list)) in tokens.iter().enumerate() {
        for (m, (name, _)) in measures.iter().enumerate() {
            let values: Vec<String> = timings[a][m].iter().map(|us| format!("{us:.4}")).collect();
            println!("RAW {alg} {name} {} {}", list.len(), values.join(" "));
        }
    }
}
