//! Helpers shared by the integration tests: test keys, token signing, a fixed clock.
//!
//! Tokens are signed with `jsonwebtoken` (a dev-dependency) so the tests need nothing but Rust
//! at run time. The keys in `tests/data/keys/` are throwaway keys made once by `generate.py`.
#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::EncodingKey;
use pg_session_auth_core::{
    parse_key, verify, Algorithm, ClaimRules, Claims, Keyring, Policy, StoredKey, VerifyError,
};
use serde_json::{json, Value};

/// The fixed clock of the tests (2023-11-14T22:13:20Z).
pub const NOW: i64 = 1_700_000_000;

/// A generous size bound, so that only the tests about size meet it.
pub const MAX_BYTES: usize = 16 * 1024;

/// 64 bytes: long enough for HS256, HS384 and HS512.
pub const HMAC_SECRET: &str = "test-secret-0123456789abcdef-0123456789abcdef-0123456789abcdef!!";

pub fn key_file(name: &str) -> String {
    let path = format!("{}/tests/data/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(text)
        .expect("test data is base64url")
}

pub fn jwt_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    alg.name()
        .parse()
        .expect("every supported algorithm is known to jsonwebtoken")
}

/// A key pair (or secret) for one algorithm: the text an administrator would add, and the
/// private half that signs.
pub struct TestKey {
    pub alg: Algorithm,
    /// What `parse_key` is given: the public PEM, or the HMAC secret itself.
    pub public_text: String,
    pub signing: EncodingKey,
}

pub fn test_key(alg: Algorithm) -> TestKey {
    let (public_text, signing) = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => (
            HMAC_SECRET.to_string(),
            EncodingKey::from_secret(HMAC_SECRET.as_bytes()),
        ),
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => (
            key_file("rsa2048-public.pem"),
            EncodingKey::from_rsa_pem(key_file("rsa2048-private.pem").as_bytes()).unwrap(),
        ),
        Algorithm::ES256 => (
            key_file("p256-public.pem"),
            EncodingKey::from_ec_pem(key_file("p256-private.pem").as_bytes()).unwrap(),
        ),
        Algorithm::ES384 => (
            key_file("p384-public.pem"),
            EncodingKey::from_ec_pem(key_file("p384-private.pem").as_bytes()).unwrap(),
        ),
        Algorithm::EdDSA => (
            key_file("ed25519-public.pem"),
            EncodingKey::from_ed_pem(key_file("ed25519-private.pem").as_bytes()).unwrap(),
        ),
    };
    TestKey {
        alg,
        public_text,
        signing,
    }
}

impl TestKey {
    pub fn stored(&self) -> StoredKey {
        parse_key(self.alg, &self.public_text).expect("test key parses")
    }

    /// Signs `header.payload` given as JSON text (used as is, so any header can be made).
    pub fn sign_raw(&self, header_json: &str, payload_json: &str) -> String {
        sign_with(&self.signing, self.alg, header_json, payload_json)
    }

    /// A token through `jsonwebtoken::encode`, with an optional `kid`.
    pub fn token(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jwt_alg(self.alg));
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.signing).expect("jsonwebtoken signs")
    }
}

/// `b64(header).b64(payload).sig` with `key` under `alg`, the texts taken verbatim.
pub fn sign_with(
    key: &EncodingKey,
    alg: Algorithm,
    header_json: &str,
    payload_json: &str,
) -> String {
    let input = format!("{}.{}", b64(header_json), b64(payload_json));
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, jwt_alg(alg)).unwrap();
    format!("{input}.{signature}")
}

/// A keyring with one active key under `kid`.
pub fn keyring_with(kid: &str, key: &TestKey) -> Keyring {
    let mut keyring = Keyring::new();
    keyring.insert(kid, key.alg, &key.stored(), false).unwrap();
    keyring
}

pub fn policy() -> Policy<'static> {
    Policy {
        max_token_bytes: MAX_BYTES,
        claims: ClaimRules::default(),
    }
}

pub fn policy_with(rules: ClaimRules<'static>) -> Policy<'static> {
    Policy {
        max_token_bytes: MAX_BYTES,
        claims: rules,
    }
}

/// Claims valid at [`NOW`]: only `exp`, an hour ahead.
pub fn fresh_claims() -> Value {
    json!({"sub": "alice", "exp": NOW + 3600})
}

pub fn verify_now(
    token: &str,
    keyring: &Keyring,
    policy: &Policy<'_>,
) -> Result<Claims, VerifyError> {
    verify(token, keyring, policy, NOW)
}
