//! Published examples: RFC 7515 Appendix A.1 (HS256) and RFC 8037 Appendix A.4 (Ed25519).
//!
//! The texts below were checked by recomputing them (Python `hmac`/`hashlib` for A.1; the
//! `cryptography` package's Ed25519 over RFC 8037's private key `d` for A.4, which is
//! deterministic and reproduces the signature below byte for byte).

mod common;

use common::{b64, unb64};
use pg_session_auth_core::{
    parse_compact, parse_key, verify, Algorithm, ClaimRules, Keyring, Policy, Rejection, StoredKey,
    VerifyError, VerifyingKey,
};

/// RFC 7515 A.1.1: the HMAC key as a JWK.
const RFC7515_A1_JWK: &str = r#"{"kty":"oct",
 "k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
}"#;

/// RFC 7515 A.1.1: the complete JWS. Header `{"typ":"JWT",\r\n "alg":"HS256"}`, payload
/// `{"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}`.
const RFC7515_A1_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

const RFC7515_A1_EXP: i64 = 1_300_819_380;

/// RFC 8037 A.2: the Ed25519 public key.
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

/// RFC 8037 A.4: header `{"alg":"EdDSA"}`, payload `Example of Ed25519 signing` (not JSON).
const RFC8037_A4_TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc\
.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

fn rfc7515_keyring() -> Keyring {
    let stored = parse_key(Algorithm::HS256, RFC7515_A1_JWK).unwrap();
    assert_eq!(
        stored,
        StoredKey::Secret(unb64(
            "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
        ))
    );
    let mut keyring = Keyring::new();
    keyring
        .insert("rfc7515", Algorithm::HS256, &stored, false)
        .unwrap();
    keyring
}

fn policy(leeway: i64) -> Policy<'static> {
    Policy {
        max_token_bytes: 8192,
        claims: ClaimRules {
            leeway,
            issuer: Some("joe"),
            audience: None,
            ..Default::default()
        },
    }
}

#[test]
fn rfc7515_a1_hs256_verifies_before_exp() {
    let keyring = rfc7515_keyring();
    let claims = verify(RFC7515_A1_TOKEN, &keyring, &policy(0), 1_300_819_000).unwrap();
    assert_eq!(claims["iss"], "joe");
    assert_eq!(claims["exp"], RFC7515_A1_EXP);
    assert_eq!(claims["http://example.com/is_root"], true);
    assert_eq!(claims.len(), 3);

    let jws = parse_compact(RFC7515_A1_TOKEN, 8192).unwrap();
    assert_eq!(jws.header.alg, "HS256");
    assert_eq!(jws.header.kid, None);
}

#[test]
fn rfc7515_a1_expiry_boundary_with_leeway() {
    let keyring = rfc7515_keyring();
    for leeway in [0, 1, 60] {
        // The last second at which it is still accepted, then the first at which it is not.
        let last_ok = RFC7515_A1_EXP + leeway - 1;
        assert!(verify(RFC7515_A1_TOKEN, &keyring, &policy(leeway), last_ok).is_ok());
        assert_eq!(
            verify(
                RFC7515_A1_TOKEN,
                &keyring,
                &policy(leeway),
                RFC7515_A1_EXP + leeway
            ),
            Err(VerifyError::Rejected(Rejection::Expired)),
            "leeway {leeway}"
        );
    }
}

#[test]
fn rfc7515_a1_rejects_modified_signature_and_payload() {
    let keyring = rfc7515_keyring();
    let now = 1_300_819_000;
    let (input, signature) = RFC7515_A1_TOKEN.rsplit_once('.').unwrap();
    let mut sig = unb64(signature);
    sig[0] ^= 1;
    let token = format!("{input}.{}", b64(&sig));
    assert_eq!(
        verify(&token, &keyring, &policy(0), now),
        Err(VerifyError::Rejected(Rejection::BadSignature))
    );
    // Same claims, re-encoded without the CR LF: the signature covers the text, not the JSON.
    let (header, _) = input.split_once('.').unwrap();
    let payload = b64(r#"{"iss":"joe","exp":1300819380,"http://example.com/is_root":true}"#);
    let token = format!("{header}.{payload}.{signature}");
    assert_eq!(
        verify(&token, &keyring, &policy(0), now),
        Err(VerifyError::Rejected(Rejection::BadSignature))
    );
}

#[test]
fn rfc7515_a1_key_is_not_accepted_as_a_public_key_algorithm() {
    // The same token against the same secret registered for HS512 (64 bytes suffice).
    let stored = parse_key(Algorithm::HS512, RFC7515_A1_JWK).unwrap();
    let mut keyring = Keyring::new();
    keyring
        .insert("k", Algorithm::HS512, &stored, false)
        .unwrap();
    assert!(matches!(
        verify(RFC7515_A1_TOKEN, &keyring, &policy(0), 1_300_819_000),
        Err(VerifyError::Rejected(Rejection::AlgorithmMismatch { .. }))
    ));
}

fn rfc8037_key() -> StoredKey {
    let jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}"}}"#);
    parse_key(Algorithm::EdDSA, &jwk).unwrap()
}

#[test]
fn rfc8037_a4_ed25519_signature_verifies() {
    let stored = rfc8037_key();
    let key = VerifyingKey::new(Algorithm::EdDSA, &stored).unwrap();
    let jws = parse_compact(RFC8037_A4_TOKEN, 8192).unwrap();
    assert_eq!(jws.header.alg, "EdDSA");
    assert_eq!(jws.header.kid, None);
    assert_eq!(unb64(jws.payload_b64), b"Example of Ed25519 signing");
    assert_eq!(jws.signature.len(), 64);
    assert!(key.verify(jws.signing_input.as_bytes(), &jws.signature));
}

#[test]
fn rfc8037_a4_verify_rejects_non_json_payload_after_the_signature() {
    let mut keyring = Keyring::new();
    keyring
        .insert("rfc8037", Algorithm::EdDSA, &rfc8037_key(), false)
        .unwrap();
    assert_eq!(
        verify(
            RFC8037_A4_TOKEN,
            &keyring,
            &Policy {
                max_token_bytes: 8192,
                claims: ClaimRules::default()
            },
            0
        ),
        Err(VerifyError::Rejected(Rejection::Malformed(
            "The payload is not a JSON object."
        )))
    );
}

#[test]
fn rfc8037_a4_one_bit_changes_fail() {
    let stored = rfc8037_key();
    let key = VerifyingKey::new(Algorithm::EdDSA, &stored).unwrap();
    let jws = parse_compact(RFC8037_A4_TOKEN, 8192).unwrap();
    for byte in 0..jws.signature.len() {
        for bit in [0, 3, 7] {
            let mut sig = jws.signature.clone();
            sig[byte] ^= 1 << bit;
            assert!(
                !key.verify(jws.signing_input.as_bytes(), &sig),
                "flipped bit {bit} of byte {byte}"
            );
        }
    }
    let mut input = jws.signing_input.as_bytes().to_vec();
    let last = input.len() - 1;
    input[last] ^= 1;
    assert!(!key.verify(&input, &jws.signature));

    // Through verify(): a flipped signature bit is a bad signature, not a payload problem.
    let mut keyring = Keyring::new();
    keyring
        .insert("rfc8037", Algorithm::EdDSA, &stored, false)
        .unwrap();
    let mut sig = jws.signature.clone();
    sig[10] ^= 0x20;
    let token = format!("{}.{}", jws.signing_input, b64(&sig));
    assert_eq!(
        verify(
            &token,
            &keyring,
            &Policy {
                max_token_bytes: 8192,
                claims: ClaimRules::default()
            },
            0
        ),
        Err(VerifyError::Rejected(Rejection::BadSignature))
    );
}
