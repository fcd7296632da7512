//! Every `Rejection` that `verify()` can return, at the fixed clock `NOW`: structure, size,
//! algorithm, key selection, headers, signature, and the registered-claim rules.

mod common;

use common::{
    b64, fresh_claims, keyring_with, policy, policy_with, sign_with, test_key, unb64, verify_now,
    MAX_BYTES, NOW,
};
use jsonwebtoken::EncodingKey;
use pg_session_auth_core::{
    parse_compact, Algorithm, ClaimRules, Claims, Keyring, Policy, Rejection, VerifyError,
};
use serde_json::{json, Value};

const KID: &str = "k1";

fn hs256() -> common::TestKey {
    test_key(Algorithm::HS256)
}

fn keyring() -> Keyring {
    keyring_with(KID, &hs256())
}

/// An HS256 token with `kid` k1 and the given payload JSON text.
fn token(payload_json: &str) -> String {
    hs256().sign_raw(r#"{"alg":"HS256","kid":"k1"}"#, payload_json)
}

fn claims_token(claims: &Value) -> String {
    hs256().token(Some(KID), claims)
}

fn check(token: &str) -> Result<Claims, VerifyError> {
    verify_now(token, &keyring(), &policy())
}

fn rejection(result: Result<Claims, VerifyError>) -> Rejection {
    match result {
        Err(VerifyError::Rejected(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Asserts a `Malformed` rejection whose detail mentions `part`.
fn assert_malformed(result: Result<Claims, VerifyError>, part: &str) {
    match rejection(result) {
        Rejection::Malformed(detail) => {
            assert!(
                detail.contains(part),
                "detail {detail:?} should mention {part:?}"
            )
        }
        other => panic!("expected Malformed({part}), got {other:?}"),
    }
}

// ---- the happy path -----------------------------------------------------------------------

#[test]
fn valid_token_returns_its_claims() {
    let claims = check(&claims_token(
        &json!({"sub": "alice", "exp": NOW + 60, "role": "admin"}),
    ))
    .unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims.len(), 3);
}

#[test]
fn every_algorithm_verifies_its_own_tokens() {
    for alg in Algorithm::ALL {
        let key = test_key(alg);
        let keyring = keyring_with("kid", &key);
        let token = key.token(Some("kid"), &fresh_claims());
        assert_eq!(
            verify_now(&token, &keyring, &policy()).unwrap()["sub"],
            "alice",
            "{alg}"
        );
        // and without kid: the only active key
        let token = key.token(None, &fresh_claims());
        assert!(
            verify_now(&token, &keyring, &policy()).is_ok(),
            "{alg} without kid"
        );
    }
}

// ---- malformed ----------------------------------------------------------------------------

#[test]
fn malformed_part_counts() {
    let good = claims_token(&fresh_claims());
    let parts: Vec<&str> = good.split('.').collect();
    assert!(check(&good).is_ok());
    for bad in [
        String::new(),
        parts[0].to_string(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
        format!("{good}."),
        format!(".{good}"),
        format!(
            "{}.{}.{}.{}.{}",
            parts[0], parts[1], parts[2], parts[1], parts[2]
        ),
        "..".to_string(),
        "...".to_string(),
    ] {
        assert!(
            matches!(rejection(check(&bad)), Rejection::Malformed(_)),
            "{bad:?}"
        );
    }
    assert_malformed(
        check(&format!("{}.{}", parts[0], parts[1])),
        "three base64url parts",
    );
    assert_malformed(
        check(&format!("{good}.{}", parts[2])),
        "three base64url parts",
    );
}

#[test]
fn malformed_empty_parts() {
    let good = claims_token(&fresh_claims());
    let parts: Vec<&str> = good.split('.').collect();
    assert_malformed(check(&format!(".{}.{}", parts[1], parts[2])), "header");
    assert_malformed(check(&format!("{}..{}", parts[0], parts[2])), "payload");
    assert_malformed(check(&format!("{}.{}.", parts[0], parts[1])), "signature");
}

#[test]
fn malformed_padding() {
    // Each part padded the way standard base64 would pad it (all three need padding here).
    let good = token(&format!(r#"{{"exp":{},"sub":"x"}}"#, NOW + 60));
    let parts: Vec<&str> = good.split('.').collect();
    assert!(check(&good).is_ok());
    let padded = |part: &str| format!("{part}{}", "=".repeat((4 - part.len() % 4) % 4));
    assert!(parts.iter().all(|p| p.len() % 4 != 0));
    assert_malformed(
        check(&format!("{}.{}.{}", padded(parts[0]), parts[1], parts[2])),
        "header",
    );
    assert_malformed(
        check(&format!("{}.{}.{}", parts[0], padded(parts[1]), parts[2])),
        "payload",
    );
    assert_malformed(
        check(&format!("{}.{}.{}", parts[0], parts[1], padded(parts[2]))),
        "signature",
    );
    // Stray padding.
    assert_malformed(
        check(&format!("{}.{}.{}==", parts[0], parts[1], parts[2])),
        "signature",
    );
    assert_malformed(
        check(&format!("={}.{}.{}", parts[0], parts[1], parts[2])),
        "header",
    );
}

#[test]
fn malformed_alphabet() {
    let good = claims_token(&fresh_claims());
    let parts: Vec<&str> = good.split('.').collect();
    // Standard base64 ('+', '/'), whitespace, and anything else outside base64url.
    for bad in ["+", "/", " ", "\n", "?", "%", "é"] {
        assert_malformed(
            check(&format!("{bad}{}.{}.{}", parts[0], parts[1], parts[2])),
            "header",
        );
        assert_malformed(
            check(&format!("{}.{bad}{}.{}", parts[0], parts[1], parts[2])),
            "payload",
        );
        assert_malformed(
            check(&format!("{}.{}.{}{bad}", parts[0], parts[1], parts[2])),
            "signature",
        );
    }
}

/// `c` replaced by the character that encodes the same bytes with non-zero unused bits.
fn non_canonical(part: &str) -> String {
    assert_ne!(part.len() % 4, 0, "a part whose length leaves unused bits");
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = part.chars().last().unwrap();
    let index = alphabet.find(last).unwrap();
    let changed = alphabet.as_bytes()[index | 1] as char; // sets the lowest (unused) bit
    assert_ne!(
        changed, last,
        "the last character already had its lowest bit set"
    );
    let mut text = part[..part.len() - 1].to_string();
    text.push(changed);
    // Decoders that ignore the unused bits read the same bytes.
    use base64::Engine;
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
    );
    assert_eq!(lenient.decode(&text).unwrap(), unb64(part));
    text
}

#[test]
fn malformed_non_canonical_base64() {
    // Find a token whose header, payload and signature all end in a character with its lowest
    // bit clear and lengths that leave unused bits.
    let key = hs256();
    let (good, parts) = (0..200)
        .map(|i| {
            let t = key.sign_raw(
                r#"{"alg":"HS256","kid":"k1"}"#,
                &format!(r#"{{"exp":{},"n":{i}}}"#, NOW + 60),
            );
            let parts: Vec<String> = t.split('.').map(str::to_owned).collect();
            (t, parts)
        })
        .find(|(_, parts)| {
            parts.iter().all(|p| {
                p.len() % 4 != 0 && {
                    let last = p.as_bytes()[p.len() - 1];
                    let alphabet =
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                    alphabet.iter().position(|&c| c == last).unwrap() & 1 == 0
                }
            })
        })
        .expect("some token fits");
    assert!(check(&good).is_ok());
    let (h, p, s) = (&parts[0], &parts[1], &parts[2]);
    assert_malformed(check(&format!("{}.{p}.{s}", non_canonical(h))), "header");
    assert_malformed(check(&format!("{h}.{p}.{}", non_canonical(s))), "signature");
    // The payload is signed as text, so a changed payload character is a bad signature...
    assert_eq!(
        rejection(check(&format!("{h}.{}.{s}", non_canonical(p)))),
        Rejection::BadSignature
    );
    // ...and a correctly signed non-canonical payload is refused when it is decoded.
    let input = format!("{h}.{}", non_canonical(p));
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &key.signing,
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    assert_malformed(check(&format!("{input}.{sig}")), "payload is not base64url");
    // A payload whose length is impossible for base64 (1 mod 4), correctly signed.
    let extra = "A".repeat((5 - p.len() % 4) % 4);
    let input = format!("{h}.{p}{extra}");
    assert_eq!((p.len() + extra.len()) % 4, 1);
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &key.signing,
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    assert_malformed(check(&format!("{input}.{sig}")), "payload is not base64url");
}

#[test]
fn malformed_header_not_an_object() {
    let key = hs256();
    let payload = format!(r#"{{"exp":{}}}"#, NOW + 60);
    for header in [
        "",
        "null",
        "\"HS256\"",
        "42",
        "true",
        r#"["alg","HS256"]"#,
        r#"{"alg":"HS256""#,
        r#"{"alg":"HS256"} x"#,
        r#"{alg:"HS256"}"#,
        "{'alg':'HS256'}",
    ] {
        if header.is_empty() {
            continue; // an empty part is covered by malformed_empty_parts
        }
        let token = key.sign_raw(header, &payload);
        assert_malformed(check(&token), "header is not a JSON object");
    }
    // Not UTF-8.
    let token = format!(
        "{}.{}.{}",
        b64([0xff, 0xfe, b'{', b'}']),
        b64(&payload),
        b64([0u8; 32])
    );
    assert_malformed(check(&token), "header is not a JSON object");
}

#[test]
fn malformed_alg_and_kid_types() {
    let key = hs256();
    let payload = format!(r#"{{"exp":{}}}"#, NOW + 60);
    for header in [
        r#"{"alg":null}"#,
        r#"{"alg":256}"#,
        r#"{"alg":["HS256"]}"#,
        r#"{"alg":{"name":"HS256"}}"#,
        r#"{"alg":true}"#,
    ] {
        assert_malformed(
            check(&key.sign_raw(header, &payload)),
            "\"alg\" is not a string",
        );
    }
    assert_malformed(
        check(&key.sign_raw(r#"{"typ":"JWT"}"#, &payload)),
        "has no \"alg\"",
    );
    assert_malformed(check(&key.sign_raw("{}", &payload)), "has no \"alg\"");
    for header in [
        r#"{"alg":"HS256","kid":1}"#,
        r#"{"alg":"HS256","kid":null}"#,
        r#"{"alg":"HS256","kid":["k1"]}"#,
    ] {
        assert_malformed(
            check(&key.sign_raw(header, &payload)),
            "\"kid\" is not a string",
        );
    }
}

#[test]
fn malformed_payload_after_a_good_signature() {
    for payload in [
        "",
        "null",
        "[]",
        "42",
        "\"text\"",
        "not json",
        r#"{"exp":1"#,
        "{} {}",
    ] {
        if payload.is_empty() {
            continue;
        }
        assert_malformed(check(&token(payload)), "payload is not a JSON object");
    }
    // Invalid UTF-8 in the payload.
    let key = hs256();
    let input = format!(
        "{}.{}",
        b64(r#"{"alg":"HS256","kid":"k1"}"#),
        b64([b'{', 0xff, b'}'])
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &key.signing,
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    assert_malformed(
        check(&format!("{input}.{sig}")),
        "payload is not a JSON object",
    );
}

// ---- size ---------------------------------------------------------------------------------

#[test]
fn too_large_is_checked_first() {
    let good = claims_token(&fresh_claims());
    let limit = good.len();
    let exact = Policy {
        max_token_bytes: limit,
        claims: ClaimRules::default(),
    };
    assert!(verify_now(&good, &keyring(), &exact).is_ok());
    let smaller = Policy {
        max_token_bytes: limit - 1,
        claims: ClaimRules::default(),
    };
    assert_eq!(
        rejection(verify_now(&good, &keyring(), &smaller)),
        Rejection::TooLarge {
            size: limit,
            limit: limit - 1
        }
    );
    // Before anything is parsed: garbage beyond the limit is "too large", not "malformed".
    let garbage = "x".repeat(MAX_BYTES + 1);
    assert_eq!(
        rejection(check(&garbage)),
        Rejection::TooLarge {
            size: MAX_BYTES + 1,
            limit: MAX_BYTES
        }
    );
    // Size is counted in bytes, not characters.
    let multibyte = "é".repeat(MAX_BYTES / 2 + 1);
    assert!(matches!(
        rejection(check(&multibyte)),
        Rejection::TooLarge { .. }
    ));
    // ...even with no key configured.
    assert!(matches!(
        verify_now(&garbage, &Keyring::new(), &policy()),
        Err(VerifyError::Rejected(Rejection::TooLarge { .. }))
    ));
}

// ---- algorithms ---------------------------------------------------------------------------

#[test]
fn unsupported_algorithms() {
    let key = hs256();
    let payload = format!(r#"{{"exp":{}}}"#, NOW + 60);
    for alg in [
        "none",
        "None",
        "NONE",
        "hs256",
        "Hs256",
        "HS256 ",
        " HS256",
        "HS-256",
        "HS1",
        "ES512",
        "ES256K",
        "RS1",
        "EdDSA25519",
        "Ed25519",
        "RSA-OAEP",
        "dir",
        "A256GCM",
        "",
    ] {
        let header = json!({"alg": alg, "kid": KID}).to_string();
        let token = key.sign_raw(&header, &payload);
        assert_eq!(
            rejection(check(&token)),
            Rejection::UnsupportedAlgorithm(alg.to_string()),
            "{alg:?}"
        );
    }
}

#[test]
fn alg_none_tokens() {
    let payload = b64(format!(r#"{{"exp":{}}}"#, NOW + 60));
    // The classic unsigned token: an empty signature part is malformed outright.
    for header in [r#"{"alg":"none"}"#, r#"{"alg":"none","kid":"k1"}"#] {
        assert_malformed(check(&format!("{}.{payload}.", b64(header))), "signature");
    }
    // With some signature bytes it is an unsupported algorithm.
    let token = format!(
        "{}.{payload}.{}",
        b64(r#"{"alg":"none","kid":"k1"}"#),
        b64("x")
    );
    assert_eq!(
        rejection(check(&token)),
        Rejection::UnsupportedAlgorithm("none".into())
    );
}

#[test]
fn algorithm_mismatch() {
    // HS256 key, tokens naming the other HMAC algorithms, correctly MACed with the same secret.
    let secret = EncodingKey::from_secret(common::HMAC_SECRET.as_bytes());
    let payload = format!(r#"{{"exp":{}}}"#, NOW + 60);
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let header = json!({"alg": alg.name(), "kid": KID}).to_string();
        let token = sign_with(&secret, alg, &header, &payload);
        assert_eq!(
            rejection(check(&token)),
            Rejection::AlgorithmMismatch {
                token: alg.name().into(),
                key: "HS256"
            }
        );
    }
    // An RS256 key against RS384/RS512/PS256 tokens signed by the same RSA key.
    let rs256 = test_key(Algorithm::RS256);
    let keyring = keyring_with(KID, &rs256);
    for alg in [
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS512,
    ] {
        let header = json!({"alg": alg.name(), "kid": KID}).to_string();
        let token = sign_with(&rs256.signing, alg, &header, &payload);
        assert_eq!(
            rejection(verify_now(&token, &keyring, &policy())),
            Rejection::AlgorithmMismatch {
                token: alg.name().into(),
                key: "RS256"
            }
        );
    }
    // ES256 key, ES384 token.
    let es256 = keyring_with(KID, &test_key(Algorithm::ES256));
    let es384 = test_key(Algorithm::ES384);
    let token = es384.token(Some(KID), &fresh_claims());
    assert_eq!(
        rejection(verify_now(&token, &es256, &policy())),
        Rejection::AlgorithmMismatch {
            token: "ES384".into(),
            key: "ES256"
        }
    );
}

#[test]
fn hs256_token_against_rs256_key_confusion_attack() {
    // The attacker knows the public key (it is public) and HMAC-signs with its PEM text, hoping
    // the verifier uses "the key" as an HMAC secret because the token says HS256.
    let rs256 = test_key(Algorithm::RS256);
    let pem = rs256.public_text.clone();
    for secret in [
        pem.clone(),
        pem.trim().to_string(),
        common::key_file("rsa2048-public-pkcs1.pem"),
    ] {
        let forging = EncodingKey::from_secret(secret.as_bytes());
        for (kid, keyring) in [
            (Some(KID), keyring_with(KID, &rs256)),
            (None, keyring_with("only", &rs256)),
        ] {
            let mut header = json!({"alg": "HS256"});
            if let Some(kid) = kid {
                header["kid"] = kid.into();
            }
            let token = sign_with(
                &forging,
                Algorithm::HS256,
                &header.to_string(),
                &fresh_claims().to_string(),
            );
            assert_eq!(
                rejection(verify_now(&token, &keyring, &policy())),
                Rejection::AlgorithmMismatch {
                    token: "HS256".into(),
                    key: "RS256"
                }
            );
        }
    }
    // The same with an EdDSA key and its PEM text.
    let ed = test_key(Algorithm::EdDSA);
    let forging = EncodingKey::from_secret(ed.public_text.as_bytes());
    let token = sign_with(
        &forging,
        Algorithm::HS256,
        r#"{"alg":"HS256","kid":"k1"}"#,
        &fresh_claims().to_string(),
    );
    assert!(matches!(
        rejection(verify_now(&token, &keyring_with(KID, &ed), &policy())),
        Rejection::AlgorithmMismatch { .. }
    ));
}

// ---- key selection ------------------------------------------------------------------------

fn two_key_ring() -> Keyring {
    let mut keyring = keyring();
    keyring
        .insert(
            "k2",
            Algorithm::ES256,
            &test_key(Algorithm::ES256).stored(),
            false,
        )
        .unwrap();
    keyring
}

#[test]
fn unknown_kid() {
    let token = hs256().token(Some("nope"), &fresh_claims());
    assert!(matches!(rejection(check(&token)), Rejection::UnknownKey(_)));
    assert!(matches!(
        rejection(verify_now(&token, &two_key_ring(), &policy())),
        Rejection::UnknownKey(_)
    ));
    // kids are matched exactly
    for kid in ["K1", "k1 ", " k1", "k", "k10"] {
        let token = hs256().token(Some(kid), &fresh_claims());
        assert!(
            matches!(rejection(check(&token)), Rejection::UnknownKey(_)),
            "{kid:?}"
        );
    }
    // The detail quotes an attacker-chosen kid escaped and cut short.
    let token = hs256().token(Some(&format!("\n{}", "x".repeat(500))), &fresh_claims());
    let detail = rejection(check(&token)).detail();
    assert!(!detail.contains('\n') && detail.len() < 200, "{detail}");
}

#[test]
fn no_kid_with_zero_one_two_active_keys() {
    let key = hs256();
    let token = key.token(None, &fresh_claims());
    // 0 keys at all, and 0 active keys (one retired): no key is configured.
    assert_eq!(
        verify_now(&token, &Keyring::new(), &policy()),
        Err(VerifyError::NoKeyConfigured)
    );
    let mut retired_only = Keyring::new();
    retired_only
        .insert(KID, Algorithm::HS256, &key.stored(), true)
        .unwrap();
    assert_eq!(
        verify_now(&token, &retired_only, &policy()),
        Err(VerifyError::NoKeyConfigured)
    );
    // A kid with no active key at all is also "no key configured".
    let with_kid = key.token(Some("other"), &fresh_claims());
    assert_eq!(
        verify_now(&with_kid, &Keyring::new(), &policy()),
        Err(VerifyError::NoKeyConfigured)
    );
    // 1 active key: it is used, whatever its kid.
    assert!(verify_now(&token, &keyring(), &policy()).is_ok());
    // 1 active key plus a retired one: the active one is used.
    let mut one_active = keyring();
    one_active
        .insert(
            "old",
            Algorithm::ES256,
            &test_key(Algorithm::ES256).stored(),
            true,
        )
        .unwrap();
    assert_eq!(one_active.active_keys(), 1);
    assert!(verify_now(&token, &one_active, &policy()).is_ok());
    // 2 active keys: ambiguous.
    assert!(matches!(
        rejection(verify_now(&token, &two_key_ring(), &policy())),
        Rejection::UnknownKey(_)
    ));
}

#[test]
fn retired_key() {
    let key = hs256();
    let mut keyring = Keyring::new();
    keyring
        .insert(KID, Algorithm::HS256, &key.stored(), true)
        .unwrap();
    keyring
        .insert(
            "k2",
            Algorithm::ES256,
            &test_key(Algorithm::ES256).stored(),
            false,
        )
        .unwrap();
    let token = key.token(Some(KID), &fresh_claims());
    assert_eq!(
        rejection(verify_now(&token, &keyring, &policy())),
        Rejection::RetiredKey(KID.into())
    );
    // Reactivated (re-inserted as active), it verifies again.
    keyring
        .insert(KID, Algorithm::HS256, &key.stored(), false)
        .unwrap();
    assert_eq!(keyring.active_keys(), 2);
    assert!(verify_now(&token, &keyring, &policy()).is_ok());
    // Retired again: the count follows.
    keyring
        .insert(KID, Algorithm::HS256, &key.stored(), true)
        .unwrap();
    assert_eq!((keyring.active_keys(), keyring.len()), (1, 2));
}

// ---- forbidden headers --------------------------------------------------------------------

#[test]
fn forbidden_headers() {
    let key = hs256();
    let payload = fresh_claims().to_string();
    let jwk = test_key(Algorithm::ES256).stored();
    let pg_session_auth_core::StoredKey::PublicJwk(jwk) = jwk else {
        unreachable!()
    };
    for (name, value) in [
        ("crit", json!(["exp"])),
        ("jwk", Value::Object(jwk)),
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("x5c", json!(["MIIB"])),
        ("enc", json!("A256GCM")),
        ("zip", json!("DEF")),
    ] {
        for value in [value, Value::Null, json!([])] {
            let mut header = json!({"alg": "HS256", "kid": KID});
            header[name] = value;
            let token = key.sign_raw(&header.to_string(), &payload);
            assert_eq!(
                rejection(check(&token)),
                Rejection::ForbiddenHeader(name),
                "{name}"
            );
        }
    }
    // Forbidden before anything else in the header is judged: alg none, no alg.
    let token = key.sign_raw(r#"{"alg":"none","jku":"x"}"#, &payload);
    assert_eq!(rejection(check(&token)), Rejection::ForbiddenHeader("jku"));
    let token = key.sign_raw(r#"{"crit":[]}"#, &payload);
    assert_eq!(rejection(check(&token)), Rejection::ForbiddenHeader("crit"));
    // Other, harmless header members are ignored.
    let token = key.sign_raw(
        r#"{"alg":"HS256","kid":"k1","typ":"JWT","cty":"x","x5t":"abc","custom":1}"#,
        &payload,
    );
    assert!(check(&token).is_ok());
    // Names are case-sensitive (RFC 7515 §4): "JKU" is not "jku".
    let token = key.sign_raw(r#"{"alg":"HS256","kid":"k1","JKU":"x"}"#, &payload);
    assert!(check(&token).is_ok());
}

// ---- signature ----------------------------------------------------------------------------

#[test]
fn bad_signature() {
    for alg in Algorithm::ALL {
        let key = test_key(alg);
        let keyring = keyring_with(KID, &key);
        let good = key.token(Some(KID), &fresh_claims());
        let (input, sig) = good.rsplit_once('.').unwrap();
        let sig = unb64(sig);
        for index in [0, sig.len() / 2, sig.len() - 1] {
            let mut bad = sig.clone();
            bad[index] ^= 0x01;
            let token = format!("{input}.{}", b64(&bad));
            assert_eq!(
                rejection(verify_now(&token, &keyring, &policy())),
                Rejection::BadSignature,
                "{alg}"
            );
        }
        // Truncated, extended, empty-ish.
        for bad in [
            &sig[..sig.len() - 1],
            &[sig.as_slice(), &[0]].concat()[..],
            &[0u8][..],
        ] {
            let token = format!("{input}.{}", b64(bad));
            assert_eq!(
                rejection(verify_now(&token, &keyring, &policy())),
                Rejection::BadSignature,
                "{alg}"
            );
        }
        // A signature for other claims.
        let other = key.token(Some(KID), &json!({"sub": "mallory", "exp": NOW + 3600}));
        let token = format!("{input}.{}", other.rsplit_once('.').unwrap().1);
        assert_eq!(
            rejection(verify_now(&token, &keyring, &policy())),
            Rejection::BadSignature,
            "{alg}"
        );
    }
}

#[test]
fn signature_from_another_key_of_the_same_kind() {
    // A different HMAC secret, and a different EC key pair, under the right kid and alg.
    let other = EncodingKey::from_secret(
        b"another-secret-another-secret-another-secret-another-secret!!!!!",
    );
    let token = sign_with(
        &other,
        Algorithm::HS256,
        r#"{"alg":"HS256","kid":"k1"}"#,
        &fresh_claims().to_string(),
    );
    assert_eq!(rejection(check(&token)), Rejection::BadSignature);

    // The RFC 8037 Ed25519 example's key is not ours.
    let ed = test_key(Algorithm::EdDSA);
    let rfc8037 = EncodingKey::from_ed_der(
        &[
            &[
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20,
            ][..],
            &unb64("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"),
        ]
        .concat(),
    );
    let token = sign_with(
        &rfc8037,
        Algorithm::EdDSA,
        r#"{"alg":"EdDSA","kid":"k1"}"#,
        &fresh_claims().to_string(),
    );
    assert_eq!(
        rejection(verify_now(&token, &keyring_with(KID, &ed), &policy())),
        Rejection::BadSignature
    );
}

#[test]
fn claims_are_not_looked_at_before_the_signature() {
    // Expired claims with a bad signature: the signature is what is reported.
    let good = claims_token(&json!({"exp": NOW - 10, "iss": 5}));
    let (input, _) = good.rsplit_once('.').unwrap();
    let token = format!("{input}.{}", b64([0u8; 32]));
    assert_eq!(rejection(check(&token)), Rejection::BadSignature);
    // Payload garbage with a bad signature: bad signature, not malformed.
    let token = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"HS256","kid":"k1"}"#),
        "____",
        b64([0u8; 32])
    );
    assert_eq!(rejection(check(&token)), Rejection::BadSignature);
}

// ---- time claims --------------------------------------------------------------------------

fn at(claims: Value, leeway: i64) -> Result<Claims, VerifyError> {
    verify_now(
        &claims_token(&claims),
        &keyring(),
        &policy_with(ClaimRules {
            leeway,
            ..Default::default()
        }),
    )
}

#[test]
fn expired_and_the_boundary() {
    assert_eq!(
        rejection(at(json!({"exp": NOW - 1}), 0)),
        Rejection::Expired
    );
    // exp is the first second at which the token is no longer accepted (RFC 7519 §4.1.4).
    assert_eq!(rejection(at(json!({"exp": NOW}), 0)), Rejection::Expired);
    assert!(at(json!({"exp": NOW + 1}), 0).is_ok());
    // With leeway the boundary moves by exactly the leeway.
    assert!(at(json!({"exp": NOW - 29}), 30).is_ok());
    assert_eq!(
        rejection(at(json!({"exp": NOW - 30}), 30)),
        Rejection::Expired
    );
    assert_eq!(
        rejection(at(json!({"exp": NOW - 31}), 30)),
        Rejection::Expired
    );
    // Fractional NumericDates (RFC 7519 §2).
    assert!(at(json!({"exp": NOW as f64 + 0.5}), 0).is_ok());
    assert_eq!(
        rejection(at(json!({"exp": NOW as f64 - 0.5}), 0)),
        Rejection::Expired
    );
    // Far past, far future, exponent notation.
    assert_eq!(rejection(at(json!({"exp": 0}), 0)), Rejection::Expired);
    assert_eq!(rejection(at(json!({"exp": -1}), 0)), Rejection::Expired);
    assert!(at(json!({"exp": 1e300}), 0).is_ok());
    assert!(at(json!({"exp": u64::MAX}), 0).is_ok());
    assert_eq!(
        rejection(at(json!({"exp": i64::MIN}), 0)),
        Rejection::Expired
    );
    assert!(check(&token(&format!(r#"{{"exp":{}e0}}"#, NOW + 1))).is_ok());
}

#[test]
fn exp_is_required() {
    assert_eq!(rejection(at(json!({}), 0)), Rejection::MissingClaim("exp"));
    assert_eq!(
        rejection(at(json!({"sub": "a", "nbf": NOW - 1}), 0)),
        Rejection::MissingClaim("exp")
    );
    // "EXP" is not "exp".
    assert_eq!(
        rejection(at(json!({"EXP": NOW + 60}), 0)),
        Rejection::MissingClaim("exp")
    );
}

#[test]
fn not_yet_valid() {
    assert_eq!(
        rejection(at(json!({"exp": NOW + 60, "nbf": NOW + 1}), 0)),
        Rejection::NotYetValid
    );
    assert!(at(json!({"exp": NOW + 60, "nbf": NOW}), 0).is_ok());
    assert!(at(json!({"exp": NOW + 60, "nbf": NOW - 1}), 0).is_ok());
    assert!(at(json!({"exp": NOW + 60, "nbf": NOW + 30}), 30).is_ok());
    assert_eq!(
        rejection(at(json!({"exp": NOW + 60, "nbf": NOW + 31}), 30)),
        Rejection::NotYetValid
    );
    assert_eq!(
        rejection(at(json!({"exp": NOW + 60, "nbf": NOW as f64 + 0.5}), 0)),
        Rejection::NotYetValid
    );
}

#[test]
fn issued_in_the_future() {
    assert_eq!(
        rejection(at(json!({"exp": NOW + 60, "iat": NOW + 1}), 0)),
        Rejection::IssuedInFuture
    );
    assert!(at(json!({"exp": NOW + 60, "iat": NOW}), 0).is_ok());
    assert!(at(json!({"exp": NOW + 60, "iat": NOW - 3600}), 0).is_ok());
    assert!(at(json!({"exp": NOW + 60, "iat": NOW + 30}), 30).is_ok());
    assert_eq!(
        rejection(at(json!({"exp": NOW + 60, "iat": NOW + 31}), 30)),
        Rejection::IssuedInFuture
    );
}

#[test]
fn lifetime_limit() {
    // With max_lifetime set, iat is required and exp - iat may not exceed it.
    let limited = |claims: Value, leeway: i64| {
        let rules = ClaimRules {
            leeway,
            max_lifetime: Some(3600),
            ..Default::default()
        };
        verify_now(&claims_token(&claims), &keyring(), &policy_with(rules))
    };
    assert!(limited(json!({"exp": NOW + 60, "iat": NOW + 60 - 3600}), 0).is_ok());
    assert_eq!(
        rejection(limited(json!({"exp": NOW + 60, "iat": NOW + 60 - 3601}), 0)),
        Rejection::LifetimeTooLong { limit: 3600 }
    );
    assert_eq!(
        rejection(limited(json!({"exp": NOW + 60}), 0)),
        Rejection::MissingClaim("iat")
    );
    // Without the limit, a long-lived token with or without iat is fine.
    assert!(at(json!({"exp": NOW + 10 * 365 * 86_400, "iat": NOW}), 0).is_ok());
}

#[test]
fn time_checks_are_ordered_exp_nbf_iat() {
    let all_bad = json!({"exp": NOW - 1, "nbf": NOW + 10, "iat": NOW + 10});
    assert_eq!(rejection(at(all_bad, 0)), Rejection::Expired);
    assert_eq!(
        rejection(at(
            json!({"exp": NOW + 60, "nbf": NOW + 10, "iat": NOW + 10}),
            0
        )),
        Rejection::NotYetValid
    );
}

// ---- issuer and audience ------------------------------------------------------------------

fn with_rules(
    claims: Value,
    issuer: Option<&'static str>,
    audience: Option<&'static str>,
) -> Result<Claims, VerifyError> {
    let rules = ClaimRules {
        leeway: 0,
        issuer,
        audience,
        ..Default::default()
    };
    verify_now(&claims_token(&claims), &keyring(), &policy_with(rules))
}

#[test]
fn issuer_rules() {
    const ISS: &str = "https://issuer.example";
    let exp = NOW + 60;
    assert!(with_rules(json!({"exp": exp, "iss": ISS}), Some(ISS), None).is_ok());
    assert_eq!(
        rejection(with_rules(json!({"exp": exp}), Some(ISS), None)),
        Rejection::MissingClaim("iss")
    );
    for wrong in [
        "https://issuer.example/",
        "HTTPS://ISSUER.EXAMPLE",
        "https://issuer.example ",
        "",
        "https://evil.example",
    ] {
        assert_eq!(
            rejection(with_rules(
                json!({"exp": exp, "iss": wrong}),
                Some(ISS),
                None
            )),
            Rejection::WrongIssuer,
            "{wrong:?}"
        );
    }
    // An array holding the issuer is not the issuer.
    assert!(matches!(
        rejection(with_rules(
            json!({"exp": exp, "iss": [ISS]}),
            Some(ISS),
            None
        )),
        Rejection::InvalidClaimType(_)
    ));
    // Without an issuer rule any string issuer, or none, is fine.
    assert!(with_rules(json!({"exp": exp, "iss": "anyone"}), None, None).is_ok());
    assert!(with_rules(json!({"exp": exp}), None, None).is_ok());
}

#[test]
fn audience_rules() {
    const AUD: &str = "db";
    let exp = NOW + 60;
    assert!(with_rules(json!({"exp": exp, "aud": AUD}), None, Some(AUD)).is_ok());
    assert!(with_rules(json!({"exp": exp, "aud": [AUD]}), None, Some(AUD)).is_ok());
    assert!(with_rules(
        json!({"exp": exp, "aud": ["web", AUD, "api"]}),
        None,
        Some(AUD)
    )
    .is_ok());
    assert_eq!(
        rejection(with_rules(json!({"exp": exp}), None, Some(AUD))),
        Rejection::MissingClaim("aud")
    );
    for wrong in [
        json!("web"),
        json!("DB"),
        json!("db "),
        json!(""),
        json!([]),
        json!(["web", "api"]),
        json!(["dbx"]),
    ] {
        assert_eq!(
            rejection(with_rules(
                json!({"exp": exp, "aud": wrong}),
                None,
                Some(AUD)
            )),
            Rejection::WrongAudience,
            "{wrong}"
        );
    }
    // Without an audience rule, any well-typed aud is fine.
    assert!(with_rules(json!({"exp": exp, "aud": ["a", "b"]}), None, None).is_ok());
    assert!(with_rules(json!({"exp": exp, "aud": []}), None, None).is_ok());
    // Issuer is checked before audience.
    assert_eq!(
        rejection(with_rules(
            json!({"exp": exp, "iss": "x", "aud": "y"}),
            Some("i"),
            Some("a")
        )),
        Rejection::WrongIssuer
    );
}

// ---- claim types --------------------------------------------------------------------------

#[test]
fn wrong_claim_types() {
    let exp = NOW + 60;
    let cases = [
        json!({"exp": "never"}),
        json!({"exp": true}),
        json!({"exp": null}),
        json!({"exp": [exp]}),
        json!({"exp": {"t": exp}}),
        json!({"exp": exp.to_string()}),
        json!({"exp": exp, "nbf": "0"}),
        json!({"exp": exp, "nbf": false}),
        json!({"exp": exp, "iat": []}),
        json!({"exp": exp, "iat": null}),
        json!({"exp": exp, "aud": 123}),
        json!({"exp": exp, "aud": [1]}),
        json!({"exp": exp, "aud": ["db", 1]}),
        json!({"exp": exp, "aud": [["db"]]}),
        json!({"exp": exp, "aud": null}),
        json!({"exp": exp, "aud": {"db": true}}),
        json!({"exp": exp, "iss": {}}),
        json!({"exp": exp, "iss": 1}),
        json!({"exp": exp, "iss": null}),
        json!({"exp": exp, "sub": 5}),
        json!({"exp": exp, "sub": null}),
        json!({"exp": exp, "sub": ["alice"]}),
        json!({"exp": exp, "jti": []}),
        json!({"exp": exp, "jti": 7}),
    ];
    for claims in cases {
        // With no rules in force: types are checked whether or not a rule uses the claim.
        assert!(
            matches!(
                rejection(at(claims.clone(), 0)),
                Rejection::InvalidClaimType(_)
            ),
            "{claims}"
        );
        // And with rules in force.
        assert!(
            matches!(
                rejection(with_rules(claims.clone(), Some("i"), Some("a"))),
                Rejection::InvalidClaimType(_)
            ),
            "{claims}"
        );
    }
    // Type errors come before the time checks: an expired token with a bad sub is a type error.
    assert!(matches!(
        rejection(at(json!({"exp": NOW - 100, "sub": 5}), 0)),
        Rejection::InvalidClaimType(_)
    ));
    // Unregistered claims may have any type.
    assert!(at(
        json!({"exp": exp, "role": 5, "scope": ["a", 1], "x": null, "meta": {"k": [true]}}),
        0
    )
    .is_ok());
}

// ---- NUL and duplicates -------------------------------------------------------------------

#[test]
fn claims_containing_nul() {
    let exp = NOW + 60;
    for claims in [
        json!({"exp": exp, "sub": "alice\u{0}"}),
        json!({"exp": exp, "role\u{0}": "admin"}),
        json!({"exp": exp, "\u{0}": 1}),
        json!({"exp": exp, "scopes": ["read", "wri\u{0}te"]}),
        json!({"exp": exp, "meta": {"a": {"b\u{0}": 1}}}),
        json!({"exp": exp, "meta": [{"a": "\u{0}"}]}),
    ] {
        assert_malformed(at(claims.clone(), 0), "NUL");
    }
    // Spelled as the JSON escape in the payload text, and raw-escaped in a nested key.
    assert_malformed(
        check(&token(&format!(r#"{{"exp":{exp},"sub":"a\u0000b"}}"#))),
        "NUL",
    );
    assert_malformed(
        check(&token(&format!(r#"{{"exp":{exp},"x":{{"\u0000":1}}}}"#))),
        "NUL",
    );
    // Other control characters are allowed (jsonb takes them).
    assert!(at(json!({"exp": exp, "sub": "a\u{1}b\n"}), 0).is_ok());
}

/// The claims of a properly signed HS256 token as `CompactJws::claims()` reads them (the
/// payload parser for `verify()` to use once the signature is good).
fn parsed_claims(payload_json: &str) -> Result<Claims, Rejection> {
    let token = token(payload_json);
    parse_compact(&token, MAX_BYTES)
        .expect("the header is fine")
        .claims()
}

#[track_caller]
fn assert_claims_malformed(result: Result<Claims, Rejection>, part: &str) {
    match result {
        Err(Rejection::Malformed(detail)) => assert!(
            detail.contains(part),
            "detail {detail:?} should mention {part:?}"
        ),
        other => panic!("expected Malformed({part}), got {other:?}"),
    }
}

/// Payloads (JSON text) whose top level has a member name twice. Each would pass every claim
/// rule at `NOW` whichever copy a parser kept, except where the copies disagree on purpose.
fn duplicate_claim_payloads() -> Vec<String> {
    let exp = NOW + 60;
    let past = NOW - 100;
    vec![
        format!(r#"{{"exp":{exp},"sub":"first","sub":"last"}}"#),
        // An expired token made to look fresh to a last-wins parser, and the reverse.
        format!(r#"{{"exp":{past},"exp":{exp}}}"#),
        format!(r#"{{"exp":{exp},"exp":{past}}}"#),
        format!(r#"{{"exp":{exp},"exp":{exp}}}"#),
        format!(r#"{{"exp":{exp},"role":"anon","role":"service_role"}}"#),
        format!(r#"{{"exp":{exp},"aud":"other","aud":["db"]}}"#),
        format!(r#"{{"exp":{exp},"sub":5,"sub":"ok"}}"#),
        // The same name spelled with an escape.
        format!(r#"{{"exp":{exp},"sub":"a","\u0073ub":"b"}}"#),
        format!(r#"{{"\u0065xp":{past},"exp":{exp}}}"#),
        // White space, and strings whose text looks like JSON structure.
        format!(r#" {{ "exp" : {exp} , "x" : "a:b,{{\"y\":1}}" , "x" : [ ":" ] }} "#),
        format!(r#"{{"exp":{exp},"x":"\\","x":"\""}}"#),
        format!(r#"{{"exp":{exp},"":1,"":2}}"#),
        format!(r#"{{"exp":{exp},"app":{{"a":[1,{{"b":2}}]}},"app":{{}}}}"#),
    ]
}

/// Guards against duplicate claim names being resolved silently (the baseline kept the last
/// one, so `{"exp":<past>,"exp":<future>}` was accepted as fresh by this parser and could be
/// read as expired, or as another role, by any first-wins consumer).
#[test]
fn duplicate_claim_names_are_malformed() {
    for payload in duplicate_claim_payloads() {
        assert_claims_malformed(parsed_claims(&payload), "more than once");
    }
    // Only the top level: nested objects are values, and jsonb keeps the last name there too.
    let exp = NOW + 60;
    let claims = parsed_claims(&format!(
        r#"{{"exp":{exp},"app":{{"role":"a","role":"b"}},"x":"exp\":1,\"exp"}}"#
    ))
    .unwrap();
    assert_eq!(claims["app"]["role"], "b");
    assert_eq!(claims.len(), 3);
    // Names that differ only in case, or in an escaped character, are different names.
    assert!(parsed_claims(&format!(
        r#"{{"exp":{exp},"sub":"a","SUB":"b","s\\ub":"c"}}"#
    ))
    .is_ok());
}

/// Guards against U+0000 reaching the claims (PostgreSQL's jsonb cannot store it), at any
/// depth, in values and in member names, when checked by the payload parser itself.
#[test]
fn claims_parser_refuses_nul_at_any_depth() {
    let exp = NOW + 60;
    for payload in [
        format!(r#"{{"exp":{exp},"sub":"a\u0000b"}}"#),
        format!(r#"{{"exp":{exp},"\u0000":1}}"#),
        format!(r#"{{"exp":{exp},"x":{{"y":[{{"\u0000z":1}}]}}}}"#),
        format!(r#"{{"exp":{exp},"x":["a","\u0000"]}}"#),
        // An escaped backslash, then the escape.
        format!(r#"{{"exp":{exp},"x":"\\\u0000"}}"#),
        json!({"exp": exp, "meta": {"a": {"b\u{0}": 1}}}).to_string(),
    ] {
        assert_claims_malformed(parsed_claims(&payload), "NUL");
    }
    // A backslash followed by the text u0000 is no NUL.
    let claims = parsed_claims(&format!(r#"{{"exp":{exp},"x":"\\u0000"}}"#)).unwrap();
    assert_eq!(claims["x"], "\\u0000");
}

/// The same through `verify()`: a properly signed token with a duplicate claim name is
/// `Malformed`, not accepted and not left to a signature failure.
#[test]
fn duplicate_claim_names_are_malformed_through_verify() {
    for payload in duplicate_claim_payloads() {
        assert_malformed(check(&token(&payload)), "more than once");
    }
    let exp = NOW + 60;
    let claims = check(&token(&format!(
        r#"{{"exp":{exp},"app":{{"role":"a","role":"b"}}}}"#
    )))
    .unwrap();
    assert_eq!(claims["app"]["role"], "b");
}

/// Headers (JSON text) with a member name twice, each a valid HS256 header for kid k1
/// whichever copy a parser kept (or, for `alg`, one copy says `none`).
const DUPLICATE_HEADERS: [&str; 13] = [
    r#"{"alg":"none","alg":"HS256","kid":"k1"}"#,
    r#"{"alg":"HS256","kid":"k1","alg":"none"}"#,
    r#"{"alg":"HS256","alg":"HS256","kid":"k1"}"#,
    r#"{"alg":"HS256","kid":"k2","kid":"k1"}"#,
    r#"{"alg":"HS256","kid":"k1","kid":"k1"}"#,
    r#"{"alg":"HS256","\u0061lg":"HS256","kid":"k1"}"#,
    r#"{"alg":"HS256","kid":"k1","\u006Bid":"k1"}"#,
    r#"{"alg":"HS256","kid":"k1","typ":"JWT","typ":"JWT"}"#,
    r#" { "alg" : "HS256" , "kid" : "k1" , "alg" : "HS256" } "#,
    r#"{"alg":"HS256","kid":"k1","x":"a\\","x":1}"#,
    r#"{"alg":"HS256","kid":"k1","x":"\"","x":{"y":[1,{"z":":"}]}}"#,
    r#"{"alg":"HS256","kid":"k1","":1,"":2}"#,
    r#"{"alg":"HS256","kid":"k1","x":[],"y":{},"x":null}"#,
];

/// Guards against duplicate header member names (`{"alg":"none","alg":"HS256"}`): parsers
/// disagree on which copy wins, and the baseline kept the last one and verified the token.
/// Every token here is properly signed, so the rejection cannot come from the signature.
#[test]
fn duplicate_header_names_are_malformed() {
    let key = hs256();
    let payload = fresh_claims().to_string();
    for header in DUPLICATE_HEADERS {
        let result = check(&key.sign_raw(header, &payload));
        assert_eq!(
            result,
            Err(VerifyError::Rejected(Rejection::Malformed(
                "The header has a member name more than once."
            ))),
            "{header}"
        );
    }
    // Not for a public-key algorithm either.
    let rs256 = test_key(Algorithm::RS256);
    let token = rs256.sign_raw(r#"{"alg":"none","alg":"RS256","kid":"r1"}"#, &payload);
    assert_malformed(
        verify_now(&token, &keyring_with("r1", &rs256), &policy()),
        "more than once",
    );
    // Only the top level counts; names inside strings or nested objects are not members.
    for header in [
        r#"{"alg":"HS256","kid":"k1","x":{"alg":"none","a":1,"a":2}}"#,
        r#"{"alg":"HS256","kid":"k1","x":"alg\":\"none","y":[":",":",{"kid":1}]}"#,
        r#"{"alg":"HS256","kid":"k1","x":"\\\\","y":"{\"a\":1}"}"#,
        r#"{"alg":"HS256","kid":"k1","ALG":"none","ki\\d":"k2"}"#,
    ] {
        assert!(check(&key.sign_raw(header, &payload)).is_ok(), "{header}");
    }
}

/// Guards against U+0000 in the header: a `kid` or `alg` with a NUL was looked up or
/// compared as is (the baseline said "unknown key" / "unsupported algorithm"), and a NUL in
/// any other member, at any depth, was accepted.
#[test]
fn header_containing_nul_is_malformed() {
    let key = hs256();
    let payload = fresh_claims().to_string();
    let with_nul = json!({"alg": "HS256", "kid": "k1", "x": ["\u{0}"]}).to_string();
    for header in [
        r#"{"alg":"HS256","kid":"k1\u0000"}"#,
        r#"{"alg":"HS256\u0000","kid":"k1"}"#,
        r#"{"alg":"HS256","kid":"k1","typ":"JWT\u0000"}"#,
        r#"{"alg":"HS256","kid":"k1","\u0000":1}"#,
        r#"{"alg":"HS256","kid":"k1","x":{"y":["\u0000"]}}"#,
        r#"{"alg":"HS256","kid":"k1","x":{"\u0000":[]}}"#,
        r#"{"alg":"HS256","kid":"k1","x":"a\\\u0000"}"#,
        &with_nul,
    ] {
        assert_eq!(
            check(&key.sign_raw(header, &payload)),
            Err(VerifyError::Rejected(Rejection::Malformed(
                "The header contains a NUL character (\\u0000)."
            ))),
            "{header}"
        );
    }
    // A backslash followed by the text u0000 is no NUL.
    assert!(check(&key.sign_raw(r#"{"alg":"HS256","kid":"k1","x":"\\u0000"}"#, &payload)).is_ok());
}

// ---- rejection texts ------------------------------------------------------------------------

#[test]
fn rejection_reasons_are_stable_and_details_safe() {
    let expected = [
        (Rejection::Malformed("x"), "malformed"),
        (Rejection::TooLarge { size: 2, limit: 1 }, "too large"),
        (
            Rejection::UnsupportedAlgorithm("none".into()),
            "unsupported algorithm",
        ),
        (Rejection::UnknownKey("x".into()), "unknown key"),
        (Rejection::RetiredKey("k".into()), "retired key"),
        (
            Rejection::AlgorithmMismatch {
                token: "HS256".into(),
                key: "RS256",
            },
            "algorithm mismatch",
        ),
        (Rejection::ForbiddenHeader("jku"), "forbidden header"),
        (Rejection::BadSignature, "bad signature"),
        (Rejection::Expired, "expired"),
        (Rejection::NotYetValid, "not yet valid"),
        (Rejection::IssuedInFuture, "issued in the future"),
        (Rejection::WrongIssuer, "wrong issuer"),
        (Rejection::WrongAudience, "wrong audience"),
        (Rejection::MissingClaim("exp"), "missing claim"),
        (Rejection::InvalidClaimType("x"), "invalid claim type"),
    ];
    for (rejection, reason) in expected {
        assert_eq!(rejection.reason(), reason);
        assert_eq!(
            VerifyError::Rejected(rejection).to_string(),
            format!("invalid token: {reason}")
        );
    }
    // An attacker-chosen algorithm name is shown escaped and cut at 64 characters.
    let long = format!("\u{7}{}", "A".repeat(1000));
    let detail = Rejection::UnsupportedAlgorithm(long).detail();
    assert!(
        detail.len() < 120 && !detail.contains('\u{7}') && detail.contains('…'),
        "{detail}"
    );
}

/// A token whose `iss`, `sub` or `jti` is longer than the revocation tables hold could never
/// be revoked (sign-out would fail), so it is not accepted; exactly the limit is.
#[test]
fn revocation_keys_longer_than_the_tables_hold_are_malformed() {
    use pg_session_auth_core::MAX_ID_BYTES;
    for name in ["iss", "sub", "jti"] {
        let mut claims = fresh_claims();
        claims[name] = json!("x".repeat(MAX_ID_BYTES));
        assert!(check(&claims_token(&claims)).is_ok(), "{name} at the limit");
        claims[name] = json!("x".repeat(MAX_ID_BYTES + 1));
        assert_eq!(
            rejection(check(&claims_token(&claims))),
            Rejection::Malformed("The iss, sub and jti claims may be at most 1024 bytes long."),
            "{name} over the limit"
        );
    }
}
