//! Signing keys: generated and imported keys sign tokens that the verifier (and, for the
//! imported ones, the matching public key) accepts; the stored form round-trips; nothing
//! private is published.

mod common;

use common::*;
use pg_session_auth_core::signing::SigningKey;
use pg_session_auth_core::{parse_key, verify, Algorithm, Keyring, StoredKey};
use serde_json::{json, Map, Value};

fn claims() -> Map<String, Value> {
    let Value::Object(claims) = json!({"sub": "u1", "exp": NOW + 60, "iat": NOW}) else {
        unreachable!()
    };
    claims
}

/// What an administrator publishes for the key: its public JWK, or the HMAC secret.
fn verifying_keyring(kid: &str, key: &SigningKey) -> Keyring {
    let stored = match key.public_jwk() {
        Some(jwk) => StoredKey::PublicJwk(jwk),
        None => StoredKey::Secret(key.stored().to_vec()),
    };
    let mut keyring = Keyring::new();
    keyring.insert(kid, key.alg(), &stored, false).unwrap();
    keyring
}

#[test]
fn generated_keys_sign_verifiable_tokens_for_every_algorithm() {
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg).unwrap();
        let token = key.sign("k1", &claims()).unwrap();
        let header: Value =
            serde_json::from_slice(&unb64(token.split('.').next().unwrap())).unwrap();
        assert_eq!(
            header,
            json!({"alg": alg.name(), "typ": "JWT", "kid": "k1"})
        );
        let verified = verify(&token, &verifying_keyring("k1", &key), &policy(), NOW).unwrap();
        assert_eq!(verified["sub"], "u1", "{}", alg.name());
        // Another key of the same algorithm does not verify it.
        let other = SigningKey::generate(alg).unwrap();
        assert!(verify(&token, &verifying_keyring("k1", &other), &policy(), NOW).is_err());
        // The stored form rebuilds the same key.
        let rebuilt = SigningKey::from_stored(alg, key.stored()).unwrap();
        assert_eq!(rebuilt.public_jwk(), key.public_jwk());
        let token = rebuilt.sign("k1", &claims()).unwrap();
        verify(&token, &verifying_keyring("k1", &key), &policy(), NOW).unwrap();
    }
}

#[test]
fn generated_keys_are_distinct_and_of_the_promised_size() {
    let a = SigningKey::generate(Algorithm::HS256).unwrap();
    let b = SigningKey::generate(Algorithm::HS256).unwrap();
    assert_eq!(a.stored().len(), 32);
    assert_ne!(a.stored(), b.stored());
    assert_eq!(
        SigningKey::generate(Algorithm::HS512)
            .unwrap()
            .stored()
            .len(),
        64
    );
    let rsa = SigningKey::generate(Algorithm::RS256)
        .unwrap()
        .public_jwk()
        .unwrap();
    assert_eq!(
        unb64(rsa["n"].as_str().unwrap()).len(),
        256,
        "2048-bit modulus"
    );
}

#[test]
fn public_jwks_have_no_private_members() {
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg).unwrap();
        match key.public_jwk() {
            None => assert!(matches!(alg.name(), "HS256" | "HS384" | "HS512")),
            Some(jwk) => {
                for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
                    assert!(
                        !jwk.contains_key(private),
                        "{} publishes {private}",
                        alg.name()
                    );
                }
                // And it is a public key the verifier's own parser accepts.
                parse_key(alg, &Value::Object(jwk).to_string()).unwrap();
            }
        }
    }
}

#[test]
fn imported_private_keys_sign_for_their_public_keys() {
    let cases = [
        (Algorithm::ES256, "p256-private.pem", "p256-public.pem"),
        (Algorithm::ES256, "p256-private-sec1.pem", "p256-public.pem"),
        (Algorithm::ES256, "p256-private.jwk.json", "p256-public.pem"),
        (Algorithm::ES384, "p384-private.pem", "p384-public.pem"),
        (Algorithm::ES384, "p384-private-sec1.pem", "p384-public.pem"),
        (Algorithm::ES384, "p384-private.jwk.json", "p384-public.pem"),
        (
            Algorithm::EdDSA,
            "ed25519-private.pem",
            "ed25519-public.pem",
        ),
        (
            Algorithm::EdDSA,
            "ed25519-private.jwk.json",
            "ed25519-public.pem",
        ),
        (
            Algorithm::RS256,
            "rsa2048-private.pem",
            "rsa2048-public.pem",
        ),
        (
            Algorithm::PS256,
            "rsa2048-private-pkcs1.pem",
            "rsa2048-public.pem",
        ),
    ];
    for (alg, private, public) in cases {
        let key = SigningKey::import(alg, &key_file(private))
            .unwrap_or_else(|e| panic!("{private}: {e}"));
        let token = key.sign("k", &claims()).unwrap();
        let mut keyring = Keyring::new();
        let stored = parse_key(alg, &key_file(public)).unwrap();
        keyring.insert("k", alg, &stored, false).unwrap();
        verify(&token, &keyring, &policy(), NOW).unwrap_or_else(|e| panic!("{private}: {e:?}"));
    }
}

#[test]
fn unusable_private_keys_are_refused() {
    // A public key, a key of another curve or type, a short RSA key, a short secret, garbage.
    let refused = [
        (Algorithm::ES256, key_file("p256-public.pem")),
        (Algorithm::ES256, key_file("p384-private.pem")),
        (Algorithm::ES384, key_file("p256-private-sec1.pem")),
        (Algorithm::EdDSA, key_file("p256-private.pem")),
        (Algorithm::RS256, key_file("rsa1024-private.pem")),
        (Algorithm::RS256, key_file("p256-private.pem")),
        (Algorithm::RS256, key_file("rsa2048-private.jwk.json")),
        (Algorithm::HS256, "too short".to_string()),
        (Algorithm::ES256, "not a key".to_string()),
        (Algorithm::ES256, "{\"kty\":\"EC\"}".to_string()),
    ];
    for (alg, text) in refused {
        assert!(
            SigningKey::import(alg, &text).is_err(),
            "{} accepted {}",
            alg.name(),
            &text[..text.len().min(40)]
        );
    }
}
