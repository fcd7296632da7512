//! Property tests: no input makes `verify()`, `parse_key()` or `parse_jwks()` panic, and no
//! change to the bytes of a valid token is accepted.

mod common;

use std::sync::LazyLock;

use common::{b64, fresh_claims, policy, test_key, NOW};
use pg_session_auth_core::{
    parse_jwks, parse_key, verify, Algorithm, Claims, Keyring, Policy, Rejection, VerifyError,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// One key of each kind, under kids k0..k11 (one per algorithm).
fn make_keyring() -> Keyring {
    let mut keyring = Keyring::new();
    for (i, alg) in Algorithm::ALL.into_iter().enumerate() {
        keyring
            .insert(&format!("k{i}"), alg, &test_key(alg).stored(), false)
            .unwrap();
    }
    keyring
}

thread_local! {
    // A Keyring is not Sync (each PostgreSQL backend has its own), so one per test thread.
    static KEYRING: Keyring = make_keyring();
}

fn check(token: &str, policy: &Policy<'_>, now: i64) -> Result<Claims, VerifyError> {
    KEYRING.with(|keyring| verify(token, keyring, policy, now))
}

/// A valid token for each algorithm (signed once: RSA signing is slow in debug builds).
static TOKENS: LazyLock<Vec<String>> = LazyLock::new(|| {
    Algorithm::ALL
        .into_iter()
        .enumerate()
        .map(|(i, alg)| {
            let claims = json!({"sub": "alice", "exp": NOW + 3600, "aud": ["db"], "n": i});
            let token = test_key(alg).token(Some(&format!("k{i}")), &claims);
            assert!(check(&token, &policy(), NOW).is_ok(), "{alg}");
            token
        })
        .collect()
});

fn alg_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(Algorithm::ALL.map(|a| a.name().to_string()).to_vec()),
        prop::sample::select(vec![
            "none".to_string(),
            "hs256".into(),
            "ES512".into(),
            String::new()
        ]),
        "[A-Za-z0-9]{0,8}",
    ]
}

/// A header that is usually a JSON object with alg/kid, sometimes something else.
fn header_json() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            alg_name(),
            prop::option::of("k[0-9]{1,2}|[a-z]{0,4}"),
            prop::option::of(prop::sample::select(vec![
                "crit", "jwk", "jku", "x5u", "x5c", "enc", "zip", "typ",
            ]))
        )
            .prop_map(|(alg, kid, extra)| {
                let mut header = json!({ "alg": alg });
                if let Some(kid) = kid {
                    header["kid"] = kid.into();
                }
                if let Some(extra) = extra {
                    header[extra] = json!([]);
                }
                header.to_string()
            }),
        any::<String>(),
        Just("null".to_string()),
        Just(r#"{"alg":5}"#.to_string()),
    ]
}

fn payload_json() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            any::<i64>(),
            prop::option::of(any::<f64>()),
            prop::option::of("[a-z\\x00]{0,5}")
        )
            .prop_map(|(exp, nbf, sub)| {
                let mut claims = json!({ "exp": exp });
                if let Some(nbf) = nbf.filter(|n| n.is_finite()) {
                    claims["nbf"] = nbf.into();
                }
                if let Some(sub) = sub {
                    claims["sub"] = sub.into();
                }
                claims.to_string()
            }),
        any::<String>(),
    ]
}

/// Token-shaped text: base64url parts (some valid JSON, some noise) joined by dots.
fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            header_json(),
            payload_json(),
            prop::collection::vec(any::<u8>(), 0..80)
        )
            .prop_map(|(h, p, s)| format!("{}.{}.{}", b64(h), b64(p), b64(s))),
        prop::collection::vec("[A-Za-z0-9_=+/.-]{0,40}", 0..6).prop_map(|parts| parts.join(".")),
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ]
}

/// JWK-shaped objects with random members, and the odd non-object.
fn jwk_like() -> impl Strategy<Value = Value> {
    let member = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..70).prop_map(|b| Value::from(b64(b))),
        // lengths that matter: RSA moduli around the limits, curve coordinates
        prop::sample::select(vec![
            0usize, 1, 31, 32, 33, 48, 66, 128, 255, 256, 257, 512, 513
        ])
        .prop_flat_map(|len| prop::collection::vec(any::<u8>(), len..=len))
        .prop_map(|b| Value::from(b64(b))),
        any::<String>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!(["verify"])),
    ];
    let name = prop::sample::select(vec![
        "kty", "crv", "n", "e", "x", "y", "k", "d", "alg", "use", "key_ops", "kid",
    ]);
    let known = prop_oneof![
        prop::sample::select(vec![
            "RSA", "EC", "OKP", "oct", "P-256", "P-384", "P-521", "Ed25519", "X25519", "sig", "enc"
        ])
        .prop_map(Value::from),
        alg_name().prop_map(Value::from),
    ];
    prop_oneof![
        prop::collection::vec((name, prop_oneof![member, known]), 0..8).prop_map(|members| {
            Value::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Map<_, _>>(),
            )
        }),
        any::<String>().prop_map(Value::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn verify_never_panics(token in token_like(), now in any::<i64>(), leeway in -10i64..100_000) {
        let mut policy = policy();
        policy.claims.leeway = leeway;
        let _ = check(&token, &policy, now);
        let _ = verify(&token, &Keyring::new(), &policy, now);
        policy.max_token_bytes = 16;
        let _ = check(&token, &policy, now);
    }

    #[test]
    fn key_parsing_never_panics(jwk in jwk_like(), text in any::<String>()) {
        for alg in Algorithm::ALL {
            let _ = parse_key(alg, &jwk.to_string());
            let _ = parse_key(alg, &text);
            let _ = parse_key(alg, &format!("-----BEGIN PUBLIC KEY-----\n{text}\n-----END PUBLIC KEY-----"));
        }
        let _ = parse_jwks(&json!({ "keys": [jwk.clone(), jwk.clone()] }));
        let _ = parse_jwks(&jwk);
        // Whatever parses must also build a verifier or refuse cleanly.
        for alg in Algorithm::ALL {
            if let Ok(stored) = parse_key(alg, &jwk.to_string()) {
                let mut keyring = Keyring::new();
                prop_assert!(keyring.insert("k", alg, &stored, false).is_ok(), "{} {}", alg, jwk);
            }
        }
    }

    #[test]
    fn any_byte_change_of_a_valid_token_is_rejected(
        which in 0..Algorithm::ALL.len(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        kind in 0..4u8,
    ) {
        let token = &TOKENS[which];
        let mut bytes = token.as_bytes().to_vec();
        let i = position.index(bytes.len());
        match kind {
            0 => {
                prop_assume!(bytes[i] != byte);
                bytes[i] = byte;
            }
            1 => {
                bytes.remove(i);
            }
            2 => bytes.insert(i, byte),
            _ => bytes.truncate(i),
        }
        // verify() takes text: changes that are not UTF-8 cannot reach it.
        let Ok(changed) = String::from_utf8(bytes) else { return Ok(()) };
        prop_assert_ne!(&changed, token);
        let result = check(&changed, &policy(), NOW);
        prop_assert!(result.is_err(), "{} accepted after change {} at {}: {}", Algorithm::ALL[which], kind, i, changed);
    }

    #[test]
    fn any_bit_flip_of_a_valid_signature_is_rejected(
        which in 0..Algorithm::ALL.len(),
        position in any::<prop::sample::Index>(),
        bit in 0..8u8,
    ) {
        let token = &TOKENS[which];
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut signature = common::unb64(signature);
        let i = position.index(signature.len());
        signature[i] ^= 1 << bit;
        let changed = format!("{input}.{}", b64(&signature));
        prop_assert!(check(&changed, &policy(), NOW).is_err());
    }
}

/// Deterministic companion of the mutation property: at the edges of every part (where
/// unused base64 bits and separators are), every other character is tried.
#[test]
fn every_character_substitution_at_part_edges_is_rejected() {
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
    for (which, token) in TOKENS.iter().enumerate() {
        let mut positions = vec![0, token.len() - 1];
        for (i, c) in token.char_indices() {
            if c == '.' {
                positions.extend([i - 1, i, i + 1]);
            }
        }
        for i in positions {
            for c in alphabet.chars() {
                if token.as_bytes()[i] == c as u8 {
                    continue;
                }
                let changed = format!("{}{c}{}", &token[..i], &token[i + 1..]);
                assert!(
                    check(&changed, &policy(), NOW).is_err(),
                    "{}: {c:?} at {i} accepted",
                    Algorithm::ALL[which]
                );
            }
        }
    }
}

#[test]
fn fresh_tokens_verify() {
    // The unchanged tokens the mutation properties start from are valid.
    for token in TOKENS.iter() {
        assert!(check(token, &policy(), NOW).is_ok());
    }
    let _ = fresh_claims();
}

// ---- duplicate member names and U+0000 ----------------------------------------------------

/// A member name, or a string value, from characters that matter to a JSON scanner.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["alg", "kid", "typ", "a", "", "A"]).prop_map(String::from),
        "[a:,{}\\[\\]\"\\\\\\x00\\x01é\u{1F600}]{0,4}",
    ]
}

/// JSON text for `text`: serde_json's spelling (only `"`, `\` and control characters
/// escaped), or every character as `\uXXXX` (surrogate pairs above the BMP).
fn spell(text: &str, escape_all: bool) -> String {
    if !escape_all {
        return serde_json::to_string(text).unwrap();
    }
    let escaped: String = text
        .encode_utf16()
        .map(|unit| format!("\\u{unit:04x}"))
        .collect();
    format!("\"{escaped}\"")
}

/// A JSON value as text, strings spelled either way, nested objects free to repeat names.
fn value_text() -> impl Strategy<Value = (String, bool)> {
    let leaf = prop_oneof![
        Just(("null".to_string(), false)),
        any::<i32>().prop_map(|n| (n.to_string(), false)),
        Just(("1.5e3".to_string(), false)),
        (tricky_text(), any::<bool>()).prop_map(|(t, e)| (spell(&t, e), t.contains('\0'))),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|items| {
                let nul = items.iter().any(|(_, n)| *n);
                let texts: Vec<String> = items.into_iter().map(|(t, _)| t).collect();
                (format!("[{}]", texts.join(",")), nul)
            }),
            prop::collection::vec((tricky_text(), any::<bool>(), inner), 0..4).prop_map(
                |members| {
                    let nul = members.iter().any(|(k, _, (_, n))| k.contains('\0') || *n);
                    let texts: Vec<String> = members
                        .into_iter()
                        .map(|(k, e, (v, _))| format!("{} : {v}", spell(&k, e)))
                        .collect();
                    (format!("{{ {} }}", texts.join(" ,")), nul)
                }
            ),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// The header parser finds exactly the repeated top-level names (however spelled) and
    /// every U+0000, whatever the strings contain: no false alarm from structure characters
    /// inside strings, no duplicate missed.
    #[test]
    fn header_duplicates_and_nul_are_found_exactly(
        members in prop::collection::vec((tricky_text(), any::<bool>(), value_text()), 0..6),
    ) {
        let mut names: Vec<&str> = vec!["alg", "kid"];
        let mut nul = false;
        let mut text = r#"{"alg":"HS256","kid":"k0""#.to_string();
        for (name, escape_all, (value, value_nul)) in &members {
            text.push_str(&format!(",{}:{value}", spell(name, *escape_all)));
            names.push(name);
            nul |= name.contains('\0') || *value_nul;
        }
        text.push('}');
        let mut distinct = names.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let duplicated = distinct.len() != names.len();
        let token = format!("{}.{}.{}", b64(&text), b64("{}"), b64([1u8; 32]));
        let result = pg_session_auth_core::parse_compact(&token, 1 << 20).map(|_| ());
        const NUL: Rejection = Rejection::Malformed("The header contains a NUL character (\\u0000).");
        const DUPLICATE: Rejection =
            Rejection::Malformed("The header has a member name more than once.");
        match (nul, duplicated) {
            // Either may be reported when both are there.
            (true, true) => prop_assert!(
                result == Err(NUL) || result == Err(DUPLICATE),
                "{:?}: {}", result, text
            ),
            (true, false) => prop_assert_eq!(result, Err(NUL), "{}", text),
            (false, true) => prop_assert_eq!(result, Err(DUPLICATE), "{}", text),
            // The generated names avoid the forbidden ones, and alg/kid repeat only as
            // duplicates, so the header is otherwise fine.
            (false, false) => prop_assert_eq!(result, Ok(()), "{}", text),
        }
    }
}
