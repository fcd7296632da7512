//! Arbitrary bytes as key text and as token: `parse_key`, `parse_jwks`, `Keyring::insert` and
//! `verify` must never panic, whatever they are given.
//!
//! Input layout: one selector byte, then the rest. The selector picks the algorithm the key is
//! added for, whether it is retired, the clock, the leeway and the lifetime limit, and (bit
//! 0x20) how the rest is read:
//! - raw: key text and token separated by the first NUL byte (without a NUL, the same text is
//!   used as both);
//! - structured: a JWK built from the bytes (key type, then each member as a length-prefixed
//!   byte string, base64url-encoded), so that numbers of any size, including empty and zero,
//!   are reached directly; what is left is the token.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use pg_session_auth_core::{
    parse_jwks, parse_key, verify, Algorithm, ClaimRules, Keyring, Policy, StoredKey,
};
use serde_json::{json, Map, Value};

/// A key that is always present, so that tokens naming it reach the signature check.
const FIXED_SECRET: &[u8] = b"fuzz-fixed-secret-0123456789abcdef-0123456789abcdef-0123456789ab";

/// Builds a JWK from bytes; returns it and the bytes not used.
fn structured_jwk(data: &[u8]) -> (Value, &[u8]) {
    let Some((&choice, mut rest)) = data.split_first() else {
        return (json!({}), data);
    };
    let (kty, crv, members): (&str, Option<&str>, &[&str]) = match choice % 6 {
        0 => ("RSA", None, &["n", "e"]),
        1 => ("EC", Some("P-256"), &["x", "y"]),
        2 => ("EC", Some("P-384"), &["x", "y"]),
        3 => ("OKP", Some("Ed25519"), &["x"]),
        4 => ("oct", None, &["k"]),
        _ => ("EC", Some("P-521"), &["x", "y"]),
    };
    let mut jwk = Map::new();
    jwk.insert("kty".into(), kty.into());
    if let Some(crv) = crv {
        jwk.insert("crv".into(), crv.into());
    }
    for name in members {
        // Two length bytes (RSA moduli go past 255 bytes), then the value.
        let len = match rest {
            [hi, lo, tail @ ..] => {
                rest = tail;
                usize::from(u16::from_be_bytes([*hi, *lo])) % 600
            }
            _ => 0,
        };
        let (value, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        jwk.insert((*name).into(), URL_SAFE_NO_PAD.encode(value).into());
    }
    if choice & 0x40 != 0 {
        jwk.insert("use".into(), "sig".into());
    }
    if choice & 0x80 != 0 {
        jwk.insert("kid".into(), "k".into());
    }
    (Value::Object(jwk), rest)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (key_text, token) = if selector & 0x20 != 0 {
        let (jwk, rest) = structured_jwk(rest);
        (jwk.to_string(), String::from_utf8_lossy(rest).into_owned())
    } else {
        let text = String::from_utf8_lossy(rest);
        match text.split_once('\0') {
            Some((key, token)) => (key.to_owned(), token.to_owned()),
            None => (text.clone().into_owned(), text.into_owned()),
        }
    };
    let alg = Algorithm::ALL[usize::from(selector) % Algorithm::ALL.len()];
    let retired = selector & 0x80 != 0;

    let mut keyring = Keyring::new();
    keyring
        .insert(
            "fixed",
            Algorithm::HS256,
            &StoredKey::Secret(FIXED_SECRET.to_vec()),
            false,
        )
        .expect("the fixed key is valid");

    if let Ok(stored) = parse_key(alg, &key_text) {
        // A key that parses must also build its verifier.
        keyring
            .insert("k", alg, &stored, retired)
            .expect("a parsed key builds a verifier");
    }
    if let Ok(document) = serde_json::from_str::<Value>(&key_text) {
        // The text as a key set, and as the one key of a set.
        for document in [json!({ "keys": [document.clone()] }), document] {
            if let Ok(entries) = parse_jwks(&document) {
                for entry in entries {
                    if let (Some(kid), Ok((alg, stored))) = (entry.kid, entry.outcome) {
                        keyring
                            .insert(&kid, alg, &stored, false)
                            .expect("an imported key builds a verifier");
                    }
                }
            }
        }
    }

    let now = i64::from(selector) * 86_400 * 365;
    let policy = Policy {
        max_token_bytes: 8192,
        claims: ClaimRules {
            leeway: i64::from(selector & 0x3f),
            issuer: Some("iss"),
            audience: Some("aud"),
            max_lifetime: (selector & 0x40 != 0).then_some(86_400),
            ..ClaimRules::default()
        },
    };
    let _ = verify(&token, &keyring, &policy, now);
    let _ = verify(&token, &Keyring::new(), &policy, now);
});
