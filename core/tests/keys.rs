//! Key text → stored key: what `parse_key` (add_key) and `parse_jwks` (import_jwks) accept and
//! refuse, and that the same key reaches the same stored form whatever its spelling.

mod common;

use common::{b64, key_file, test_key, unb64, HMAC_SECRET};
use pg_session_auth_core::{
    check_kid, parse_jwks, parse_key, Algorithm, KeyError, Keyring, StoredKey, VerifyingKey,
    MAX_JWKS_KEYS, MAX_KID_BYTES,
};
use serde_json::{json, Map, Value};

fn jwk_file(name: &str) -> Map<String, Value> {
    match serde_json::from_str(&key_file(name)).unwrap() {
        Value::Object(object) => object,
        _ => unreachable!(),
    }
}

fn with(mut jwk: Map<String, Value>, name: &str, value: Value) -> String {
    jwk.insert(name.into(), value);
    Value::Object(jwk).to_string()
}

fn text(jwk: &Map<String, Value>) -> String {
    Value::Object(jwk.clone()).to_string()
}

fn public_jwk(stored: StoredKey) -> Map<String, Value> {
    match stored {
        StoredKey::PublicJwk(jwk) => jwk,
        other => panic!("expected a public JWK, got {other:?}"),
    }
}

const PUBLIC_ALGS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn pem_for(alg: Algorithm) -> String {
    match alg {
        Algorithm::ES256 => key_file("p256-public.pem"),
        Algorithm::ES384 => key_file("p384-public.pem"),
        Algorithm::EdDSA => key_file("ed25519-public.pem"),
        _ => key_file("rsa2048-public.pem"),
    }
}

fn jwk_for(alg: Algorithm) -> Map<String, Value> {
    match alg {
        Algorithm::ES256 => jwk_file("p256-public.jwk.json"),
        Algorithm::ES384 => jwk_file("p384-public.jwk.json"),
        Algorithm::EdDSA => jwk_file("ed25519-public.jwk.json"),
        _ => jwk_file("rsa2048-public.jwk.json"),
    }
}

// ---- HMAC secrets -------------------------------------------------------------------------

#[test]
fn hmac_secret_lengths() {
    for (alg, min) in [
        (Algorithm::HS256, 32),
        (Algorithm::HS384, 48),
        (Algorithm::HS512, 64),
    ] {
        let short = "s".repeat(min - 1);
        assert_eq!(
            parse_key(alg, &short),
            Err(KeyError::SecretTooShort {
                alg: alg.name(),
                min,
                actual: min - 1
            })
        );
        assert_eq!(
            parse_key(alg, ""),
            Err(KeyError::SecretTooShort {
                alg: alg.name(),
                min,
                actual: 0
            })
        );
        let exact = "s".repeat(min);
        assert_eq!(
            parse_key(alg, &exact),
            Ok(StoredKey::Secret(exact.clone().into_bytes()))
        );
        // Bytes, not characters: 16 three-byte characters are 48 bytes.
        let multibyte = "€".repeat(min / 3 + 1);
        assert!(parse_key(alg, &multibyte).is_ok(), "{alg}");

        // As a JWK (kty oct), the decoded k counts.
        let jwk = |len: usize| json!({"kty": "oct", "k": b64(vec![7u8; len])}).to_string();
        assert_eq!(
            parse_key(alg, &jwk(min - 1)),
            Err(KeyError::SecretTooShort {
                alg: alg.name(),
                min,
                actual: min - 1
            })
        );
        assert_eq!(
            parse_key(alg, &jwk(min)),
            Ok(StoredKey::Secret(vec![7u8; min]))
        );

        // A stored secret written by hand is re-checked when its verifier is built.
        assert!(matches!(
            VerifyingKey::new(alg, &StoredKey::Secret(vec![1; min - 1])),
            Err(KeyError::SecretTooShort { .. })
        ));
        assert!(VerifyingKey::new(alg, &StoredKey::Secret(vec![1; min])).is_ok());
    }
}

#[test]
fn pem_text_is_never_an_hmac_secret() {
    // Registering a public key's PEM as an HMAC secret would let anyone who has the public key
    // sign tokens (the key-confusion attack, by configuration).
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        for file in [
            "rsa2048-public.pem",
            "rsa2048-public-pkcs1.pem",
            "p256-public.pem",
            "ed25519-public.pem",
            "p521-public.pem",
            "rsa2048-private.pem",
        ] {
            let pem = key_file(file);
            assert!(pem.len() >= 64);
            for text in [pem.clone(), format!("  \n{pem}")] {
                let result = parse_key(alg, &text);
                assert!(
                    matches!(result, Err(KeyError::TypeMismatch { .. })),
                    "{alg} {file}: {result:?}"
                );
            }
        }
    }
}

#[test]
fn hmac_secret_is_kept_byte_for_byte() {
    // The secret is the text given, untrimmed (as Supabase / PostgREST use it).
    let secret = format!(" {HMAC_SECRET}\n");
    assert_eq!(
        parse_key(Algorithm::HS256, &secret),
        Ok(StoredKey::Secret(secret.clone().into_bytes()))
    );
}

#[test]
fn oct_jwk_mismatches() {
    let k = b64([9u8; 64]);
    // A secret for a public-key algorithm.
    for alg in PUBLIC_ALGS {
        assert!(
            matches!(
                parse_key(alg, &json!({"kty": "oct", "k": k}).to_string()),
                Err(KeyError::TypeMismatch { .. })
            ),
            "{alg}"
        );
        assert!(matches!(
            VerifyingKey::new(alg, &StoredKey::Secret(vec![9; 64])),
            Err(KeyError::TypeMismatch { .. })
        ));
    }
    // Declared for another algorithm.
    assert!(matches!(
        parse_key(
            Algorithm::HS256,
            &json!({"kty": "oct", "k": k, "alg": "HS512"}).to_string()
        ),
        Err(KeyError::TypeMismatch { .. })
    ));
    // An AES key.
    assert_eq!(
        parse_key(
            Algorithm::HS256,
            &json!({"kty": "oct", "k": k, "alg": "A256GCM"}).to_string()
        ),
        Err(KeyError::UnsupportedAlgorithm("A256GCM".into()))
    );
    // k missing, not a string, padded, standard alphabet.
    for bad in [
        json!({"kty": "oct"}),
        json!({"kty": "oct", "k": 5}),
        json!({"kty": "oct", "k": format!("{k}==")}),
    ] {
        assert!(
            matches!(
                parse_key(Algorithm::HS256, &bad.to_string()),
                Err(KeyError::Invalid(_))
            ),
            "{bad}"
        );
    }
    let standard = "+/+/".repeat(16);
    assert!(matches!(
        parse_key(
            Algorithm::HS256,
            &json!({"kty": "oct", "k": standard}).to_string()
        ),
        Err(KeyError::Invalid(_))
    ));
}

// ---- HMAC secrets that are public key material in disguise --------------------------------
//
// Regression tests for a bypass of the "no public key as an HMAC secret" guard: it looked only
// for `-----BEGIN` at the start of the trimmed key text, so a byte-order mark before the PEM,
// a PEM inside an `oct` JWK's `k`, JWK JSON text, or the key's DER or base64 body were all
// stored as HMAC secrets that anyone holding the public key can sign with.

const HMAC_ALGS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// PEM files of public keys and certificates (what an attacker can know), and one private key.
const PEM_FILES: [&str; 9] = [
    "rsa2048-public.pem",
    "rsa2048-public-pkcs1.pem",
    "p256-public.pem",
    "p384-public.pem",
    "ed25519-public.pem",
    "p521-public.pem",
    "rsa2048-cert.pem",
    "ed25519-cert.pem",
    "rsa2048-private.pem",
];

/// The DER inside a PEM file (its body, base64 without the armour lines).
fn pem_der(pem: &str) -> Vec<u8> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    STANDARD
        .decode(body)
        .expect("test PEM files are base64 inside")
}

fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn utf16be(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

fn hex_text(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that `parse_key` refuses `text` for every HMAC algorithm with the guard's
/// `TypeMismatch`, and says what the key was found to be (`found` contains `what`).
#[track_caller]
fn assert_refused_as_secret(text: &str, what: &str, case: &str) {
    for alg in HMAC_ALGS {
        match parse_key(alg, text) {
            Err(KeyError::TypeMismatch {
                alg: name,
                expected,
                found,
            }) => {
                assert_eq!(name, alg.name(), "{case}");
                assert_eq!(expected, "an HMAC secret", "{case}");
                assert!(found.contains(what), "{alg} {case}: found {found:?}");
            }
            other => panic!("{alg} {case}: expected TypeMismatch ({what}), got {other:?}"),
        }
    }
}

/// The same for an `oct` JWK whose `k` is `secret`, and for `secret` as a stored row (a
/// secret written into auth.keys by hand, or by a version without the guard, must not
/// build a verifier either).
#[track_caller]
fn assert_refused_as_oct_and_row(secret: &[u8], what: &str, case: &str) {
    let jwk = json!({"kty": "oct", "k": b64(secret)}).to_string();
    assert_refused_as_secret(&jwk, what, &format!("oct k = {case}"));
    for alg in HMAC_ALGS {
        assert!(
            matches!(
                VerifyingKey::new(alg, &StoredKey::Secret(secret.to_vec())),
                Err(KeyError::TypeMismatch { .. })
            ),
            "{alg} stored row {case}"
        );
    }
}

/// Guards against a byte-order mark, white space or other text before the armour hiding a
/// PEM block from the guard (the baseline only trimmed Unicode white space, which the BOM
/// is not, and then looked for `-----BEGIN` at the very start).
#[test]
fn pem_after_a_bom_or_preamble_is_never_an_hmac_secret() {
    for file in PEM_FILES {
        let pem = key_file(file);
        for prefix in [
            "\u{FEFF}",
            "\u{FEFF}\u{FEFF}",
            "\u{FEFF}\r\n",
            "\r\n\u{FEFF}",
            " \t\u{FEFF}\n",
            "\r\n",
            "\u{0B}\u{0C}",
            "\u{200B}",
            "\u{A0}",
            // What `openssl pkcs12 -nokeys` and `openssl x509 -text` put before the armour.
            "Bag Attributes\n    localKeyID: 01 00 00 00\nsubject=CN = test\n",
            "Public key:\n",
        ] {
            for suffix in ["", "\n", "\u{FEFF}", "\r\n\r\n"] {
                let text = format!("{prefix}{pem}{suffix}");
                assert_refused_as_secret(&text, "PEM", &format!("{prefix:?} + {file}"));
            }
        }
        // Line endings rewritten, armour in lower case.
        assert_refused_as_secret(&pem.replace('\n', "\r\n"), "PEM", &format!("CRLF {file}"));
        assert_refused_as_secret(&pem.to_lowercase(), "PEM", &format!("lower-case {file}"));
    }
}

/// Guards against a PEM block (public key or certificate) given as the `k` of an `oct` JWK,
/// plain or with a BOM or white space before it, or saved as UTF-16: the baseline checked
/// the decoded `k` for nothing but its length.
#[test]
fn oct_jwk_whose_k_is_a_pem_is_never_an_hmac_secret() {
    for file in PEM_FILES {
        let pem = key_file(file);
        for secret in [
            pem.clone().into_bytes(),
            format!("\u{FEFF}{pem}").into_bytes(),
            format!("\r\n{pem}").into_bytes(),
            format!("\u{FEFF}\r\n \t{pem}\n").into_bytes(),
            pem.replace('\n', "\r\n").into_bytes(),
            utf16le(&format!("\u{FEFF}{pem}")),
            utf16be(&format!("\u{FEFF}{pem}")),
            utf16le(&pem),
        ] {
            assert_refused_as_oct_and_row(&secret, "PEM", file);
        }
    }
    // Stored rows with the plain PEM text (what the key text path refused all along) are
    // refused when the verifier is built too.
    for alg in HMAC_ALGS {
        let pem = key_file("rsa2048-public.pem").into_bytes();
        assert!(matches!(
            VerifyingKey::new(alg, &StoredKey::Secret(pem)),
            Err(KeyError::TypeMismatch { .. })
        ));
    }
}

/// Guards against JWK or JWKS JSON text used as an HMAC secret: as key text after a BOM (the
/// baseline did not see the `{` and stored the JSON as the secret), as key text after other
/// leading text, and as the decoded `k` of an `oct` JWK.
#[test]
fn jwk_or_jwks_json_is_never_an_hmac_secret() {
    let rsa = text(&jwk_for(Algorithm::RS256));
    let ed = text(&jwk_for(Algorithm::EdDSA));
    let p256 = text(&jwk_for(Algorithm::ES256));
    let set = json!({"keys": [jwk_for(Algorithm::RS256), jwk_for(Algorithm::EdDSA)]}).to_string();
    let pretty_set =
        serde_json::to_string_pretty(&json!({"keys": [jwk_for(Algorithm::ES256)]})).unwrap();
    // Member names spelled with escapes, and JSON that is cut short.
    let escaped = rsa.replacen("\"kty\"", "\"\\u006bty\"", 1);
    let cut_short = rsa[..rsa.len() - 1].to_string();

    // Key text with a BOM (or another invisible prefix) before the JSON.
    for (json, what) in [
        (&rsa, "JWK"),
        (&ed, "JWK"),
        (&set, "JWK set"),
        (&pretty_set, "JWK set"),
    ] {
        for prefix in ["\u{FEFF}", "\u{FEFF}\r\n", "\u{200B}", "jwk: "] {
            let text = format!("{prefix}{json}");
            for alg in HMAC_ALGS {
                let result = parse_key(alg, &text);
                assert!(
                    matches!(result, Err(KeyError::TypeMismatch { .. })),
                    "{alg} {prefix:?}{what}: {result:?}"
                );
            }
        }
    }
    // A key set given as key text, with or without a BOM, is refused as one.
    assert_refused_as_secret(&set, "JWK set", "JWKS text");
    assert_refused_as_secret(&format!("\u{FEFF}{set}"), "JWK set", "BOM + JWKS text");

    // Inside an oct JWK's k.
    for (json, what) in [
        (&rsa, "JWK"),
        (&ed, "JWK"),
        (&p256, "JWK"),
        (&set, "JWK set"),
        (&pretty_set, "JWK set"),
        (&escaped, "JWK"),
        (&cut_short, "JWK"),
    ] {
        for secret in [
            json.clone(),
            format!("\u{FEFF}{json}"),
            format!("\r\n{json}\r\n"),
            format!("[{json}]"),
        ] {
            assert_refused_as_oct_and_row(secret.as_bytes(), what, &secret);
        }
    }
}

/// Guards against the public key's DER, or the PEM body without its armour lines (base64 of
/// the DER), or its hex, used as an HMAC secret: as key text, as an `oct` JWK's `k`, and as a
/// stored row. The baseline took all of them.
#[test]
fn der_and_encoded_public_keys_are_never_hmac_secrets() {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;
    for file in PEM_FILES {
        let pem = key_file(file);
        let der = pem_der(&pem);
        // The armour lines deleted by hand: the base64 body, as in the file or on one line.
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .map(|line| format!("{line}\n"))
            .collect();
        for text in [
            body.clone(),
            format!("\u{FEFF}{body}"),
            body.replace('\n', ""),
            STANDARD.encode(&der).trim_end_matches('=').to_string(),
            URL_SAFE_NO_PAD.encode(&der),
            hex_text(&der),
            hex_text(&der).to_uppercase(),
        ] {
            assert_refused_as_secret(&text, "DER", &format!("encoded DER of {file}"));
            assert_refused_as_oct_and_row(text.as_bytes(), "DER", &format!("encoded {file}"));
        }
        // The DER itself, only possible as k (it is not UTF-8) or as a stored row.
        assert_refused_as_oct_and_row(&der, "DER", &format!("DER of {file}"));
        // The PEM text, base64-encoded once more (as k it is then encoded twice).
        assert_refused_as_secret(&STANDARD.encode(&pem), "PEM", &format!("base64 PEM {file}"));
        assert_refused_as_oct_and_row(STANDARD.encode(&pem).as_bytes(), "PEM", file);
    }
}

/// The guard must not refuse ordinary secrets: text, base64 and hex secrets as generators
/// make them, and random bytes as `k`. (Not a regression test: the baseline takes these
/// too; it keeps the stricter guard from refusing real secrets.)
#[test]
fn ordinary_hmac_secrets_are_still_accepted() {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    let mut texts = vec![
        HMAC_SECRET.to_string(),
        // Supabase's documented local-development secret.
        "super-secret-jwt-token-with-at-least-32-characters-long".to_string(),
        format!(" {HMAC_SECRET}\n"),
        // Words that appear in PEM files, without the armour.
        "BEGIN PUBLIC KEY and keys and kty but not a key, long enough....".to_string(),
        "a secret with {braces} and [brackets], long enough for any HMAC".to_string(),
        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA (looks like a key, is not)".to_string(),
    ];
    // Deterministic pseudo-random bytes (xorshift), as base64, base64url and hex text
    // (`openssl rand -base64 64`, `-hex 64`) and raw as k.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state.to_le_bytes()
    };
    for round in 0..300 {
        let bytes: Vec<u8> = (0..8 + round % 8).flat_map(|_| next()).collect();
        texts.push(STANDARD.encode(&bytes));
        texts.push(b64(&bytes));
        texts.push(hex_text(&bytes));
        let min = 64.min(bytes.len());
        let mut k = bytes.clone();
        // Some that start like DER (a SEQUENCE of the right length).
        if round % 3 == 0 && k.len() >= 2 {
            k[0] = 0x30;
            k[1] = (k.len() - 2) as u8;
        }
        if k.len() >= min {
            let jwk = json!({"kty": "oct", "k": b64(&k)}).to_string();
            assert_eq!(
                parse_key(Algorithm::HS256, &jwk),
                Ok(StoredKey::Secret(k.clone())),
                "random k {round}"
            );
        }
    }
    for text in texts {
        assert_eq!(
            parse_key(Algorithm::HS256, &text),
            Ok(StoredKey::Secret(text.clone().into_bytes())),
            "{text:?}"
        );
    }
}

/// A BOM before a PEM or a JWK given for a public-key algorithm is dropped like white space,
/// so the key is read as what it is. (The baseline refused it as neither PEM nor JWK; this is
/// a consequence of the normalisation rather than a defect of its own.)
#[test]
fn bom_before_public_key_text_is_ignored() {
    for alg in PUBLIC_ALGS {
        let expected = parse_key(alg, &pem_for(alg)).unwrap();
        assert_eq!(
            parse_key(alg, &format!("\u{FEFF}{}", pem_for(alg))),
            Ok(expected.clone()),
            "{alg} PEM"
        );
        assert_eq!(
            parse_key(alg, &format!("\u{FEFF}\r\n{}", text(&jwk_for(alg)))),
            Ok(expected),
            "{alg} JWK"
        );
    }
    // For HMAC algorithms an oct JWK after a BOM is read as the JWK, not taken as the secret.
    let k = [5u8; 64];
    assert_eq!(
        parse_key(
            Algorithm::HS256,
            &format!("\u{FEFF}{}", json!({"kty": "oct", "k": b64(k)}))
        ),
        Ok(StoredKey::Secret(k.to_vec()))
    );
}

// ---- RSA ----------------------------------------------------------------------------------

#[test]
fn rsa_smaller_than_2048_bits_is_refused() {
    for alg in [Algorithm::RS256, Algorithm::PS512] {
        assert_eq!(
            parse_key(alg, &key_file("rsa1024-public.pem")),
            Err(KeyError::RsaKeySize(1024))
        );
        assert_eq!(
            parse_key(alg, &key_file("rsa1024-public-pkcs1.pem")),
            Err(KeyError::RsaKeySize(1024))
        );
        assert_eq!(
            parse_key(alg, &key_file("rsa1024-public.jwk.json")),
            Err(KeyError::RsaKeySize(1024))
        );
        assert!(parse_key(alg, &key_file("rsa2048-public.pem")).is_ok());
    }
    // One bit short of 2048, with the top bit pattern kept: 0x7f.. is 2047 bits.
    let mut n = vec![0x7fu8; 256];
    n[255] = 0x01;
    let jwk = json!({"kty": "RSA", "n": b64(&n), "e": "AQAB"}).to_string();
    assert_eq!(
        parse_key(Algorithm::RS256, &jwk),
        Err(KeyError::RsaKeySize(2047))
    );
}

#[test]
fn rsa_larger_than_4096_bits_is_refused() {
    let mut n = vec![0xffu8; 513];
    n[0] = 0x01; // 4097 bits
    let jwk = json!({"kty": "RSA", "n": b64(&n), "e": "AQAB"}).to_string();
    assert_eq!(
        parse_key(Algorithm::RS256, &jwk),
        Err(KeyError::RsaKeySize(4097))
    );
}

#[test]
fn rsa_degenerate_numbers_are_refused_without_panicking() {
    let n = unb64(jwk_file("rsa2048-public.jwk.json")["n"].as_str().unwrap());
    let cases = [
        // Empty or all-zero modulus / exponent.
        json!({"kty": "RSA", "n": "", "e": "AQAB"}),
        json!({"kty": "RSA", "n": "AA", "e": "AQAB"}),
        json!({"kty": "RSA", "n": "AAAA", "e": "AQAB"}),
        json!({"kty": "RSA", "n": b64(&n), "e": ""}),
        json!({"kty": "RSA", "n": b64(&n), "e": "AA"}),
        // Exponent 1 (Wycheproof exponentOne), even exponent, even modulus.
        json!({"kty": "RSA", "n": b64(&n), "e": "AQ"}),
        json!({"kty": "RSA", "n": b64(&n), "e": "AAI"}),
        json!({"kty": "RSA", "n": b64([&n[..255], &[n[255] & 0xfe]].concat()), "e": "AQAB"}),
        // Exponent larger than the modulus allows.
        json!({"kty": "RSA", "n": b64(&n), "e": b64([0xffu8; 300])}),
        // Members missing or of the wrong type.
        json!({"kty": "RSA", "e": "AQAB"}),
        json!({"kty": "RSA", "n": b64(&n)}),
        json!({"kty": "RSA", "n": 5, "e": "AQAB"}),
    ];
    for jwk in cases {
        let result = parse_key(Algorithm::RS256, &jwk.to_string());
        assert!(result.is_err(), "{jwk} accepted");
        let set = parse_jwks(&json!({"keys": [dict_with_kid(&jwk)]})).unwrap();
        assert!(set[0].outcome.is_err(), "{jwk} imported");
    }
    // Leading zero bytes in n do not change the key.
    let padded =
        json!({"kty": "RSA", "n": b64([&[0u8, 0][..], &n].concat()), "e": "AAEAAQ"}).to_string();
    assert_eq!(
        parse_key(Algorithm::RS256, &padded).unwrap(),
        parse_key(Algorithm::RS256, &key_file("rsa2048-public.jwk.json")).unwrap()
    );
}

fn dict_with_kid(jwk: &Value) -> Value {
    let mut jwk = jwk.clone();
    jwk["kid"] = "k".into();
    jwk
}

// ---- EC and Ed25519 -----------------------------------------------------------------------

#[test]
fn wrong_curve_or_key_type_is_a_type_mismatch() {
    let mismatch = |alg: Algorithm, text: &str| {
        let result = parse_key(alg, text);
        assert!(
            matches!(result, Err(KeyError::TypeMismatch { .. })),
            "{alg}: {result:?}"
        );
    };
    // P-384 for ES256, both spellings, and the other way round.
    mismatch(Algorithm::ES256, &key_file("p384-public.pem"));
    mismatch(Algorithm::ES256, &key_file("p384-public.jwk.json"));
    mismatch(Algorithm::ES384, &key_file("p256-public.pem"));
    mismatch(Algorithm::ES384, &key_file("p256-public.jwk.json"));
    // Every public key against every algorithm of another kind.
    let kinds = [
        (Algorithm::RS256, "rsa2048"),
        (Algorithm::ES256, "p256"),
        (Algorithm::ES384, "p384"),
        (Algorithm::EdDSA, "ed25519"),
    ];
    for (own, stem) in kinds {
        for alg in PUBLIC_ALGS {
            if alg.key_kind() == own.key_kind() {
                continue;
            }
            mismatch(alg, &key_file(&format!("{stem}-public.pem")));
            mismatch(alg, &key_file(&format!("{stem}-public.jwk.json")));
        }
    }
    let detail = parse_key(Algorithm::ES256, &key_file("p384-public.pem"))
        .unwrap_err()
        .to_string();
    assert!(
        detail.contains("P-256") && detail.contains("P-384"),
        "{detail}"
    );
    // A JWK declared for one algorithm given for another of the same kind.
    let declared = with(jwk_file("rsa2048-public.jwk.json"), "alg", "RS256".into());
    mismatch(Algorithm::PS256, &declared);
    assert!(parse_key(Algorithm::RS256, &declared).is_ok());
}

#[test]
fn p521_and_other_curves_are_unsupported() {
    for alg in Algorithm::ALL {
        assert!(
            parse_key(alg, &key_file("p521-public.pem")).is_err(),
            "{alg}"
        );
        assert!(
            parse_key(alg, &key_file("p521-public.jwk.json")).is_err(),
            "{alg}"
        );
    }
    let set = parse_jwks(&json!({"keys": [
        with(jwk_file("p521-public.jwk.json"), "kid", "a".into()).parse::<Value>().unwrap(),
        {"kty": "OKP", "crv": "X25519", "x": b64([9u8; 32]), "kid": "b"},
        {"kty": "OKP", "crv": "Ed448", "x": b64([9u8; 57]), "kid": "c"},
        {"kty": "EC", "crv": "secp256k1", "x": b64([1u8; 32]), "y": b64([2u8; 32]), "kid": "d"},
        {"kty": "EC", "x": b64([1u8; 32]), "y": b64([2u8; 32]), "kid": "e"},
        {"kty": "XYZ", "kid": "f"},
        {"kid": "g"},
    ]}))
    .unwrap();
    for entry in set {
        assert!(entry.outcome.is_err(), "{:?}", entry.kid);
    }
}

#[test]
fn ec_points_must_be_on_the_curve() {
    let jwk = jwk_file("p256-public.jwk.json");
    let mut y = unb64(jwk["y"].as_str().unwrap());
    y[31] ^= 1;
    assert!(matches!(
        parse_key(Algorithm::ES256, &with(jwk.clone(), "y", b64(&y).into())),
        Err(KeyError::Invalid(_))
    ));
    // Wrong coordinate lengths (short, long, leading zero added).
    let x = unb64(jwk["x"].as_str().unwrap());
    for bad in [b64(&x[1..]), b64([&[0u8][..], &x].concat()), String::new()] {
        assert!(matches!(
            parse_key(Algorithm::ES256, &with(jwk.clone(), "x", bad.into())),
            Err(KeyError::Invalid(_))
        ));
    }
    // The point at infinity / all zeros.
    let zeros = with(
        with(jwk.clone(), "x", b64([0u8; 32]).into())
            .parse::<Value>()
            .unwrap()
            .as_object()
            .unwrap()
            .clone(),
        "y",
        b64([0u8; 32]).into(),
    );
    assert!(parse_key(Algorithm::ES256, &zeros).is_err());
    // P-384 likewise.
    let jwk = jwk_file("p384-public.jwk.json");
    let mut y = unb64(jwk["y"].as_str().unwrap());
    y[47] ^= 1;
    assert!(matches!(
        parse_key(Algorithm::ES384, &with(jwk, "y", b64(&y).into())),
        Err(KeyError::Invalid(_))
    ));
}

/// The small-order points of edwards25519 (orders 1, 2, 4, 8, 8), as libsodium lists them.
const ED25519_SMALL_ORDER: [&str; 5] = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
];

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn ed25519_small_order_keys_are_refused() {
    assert!(matches!(
        parse_key(
            Algorithm::EdDSA,
            &key_file("ed25519-small-order-public.pem")
        ),
        Err(KeyError::Invalid(_))
    ));
    for point in ED25519_SMALL_ORDER {
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(hex(point))});
        let result = parse_key(Algorithm::EdDSA, &jwk.to_string());
        assert!(
            matches!(result, Err(KeyError::Invalid(_))),
            "{point}: {result:?}"
        );
        let set = parse_jwks(&json!({"keys": [dict_with_kid(&jwk)]})).unwrap();
        assert!(set[0].outcome.is_err(), "{point} imported");
        // And a hand-written stored row with it cannot build a verifier.
        let mut stored = public_jwk(test_key(Algorithm::EdDSA).stored());
        stored.insert("x".into(), b64(hex(point)).into());
        assert!(
            VerifyingKey::new(Algorithm::EdDSA, &StoredKey::PublicJwk(stored)).is_err(),
            "{point}"
        );
    }
    // Wrong lengths.
    for len in [0, 31, 33, 64] {
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(vec![5u8; len])}).to_string();
        assert!(
            matches!(parse_key(Algorithm::EdDSA, &jwk), Err(KeyError::Invalid(_))),
            "{len}"
        );
    }
}

// ---- private keys, usage ------------------------------------------------------------------

#[test]
fn private_pems_are_refused() {
    let cases = [
        (Algorithm::RS256, "rsa2048-private.pem"),
        (Algorithm::RS256, "rsa2048-private-pkcs1.pem"),
        (Algorithm::PS256, "rsa2048-private.pem"),
        (Algorithm::ES256, "p256-private.pem"),
        (Algorithm::ES256, "p256-private-sec1.pem"),
        (Algorithm::ES384, "p384-private.pem"),
        (Algorithm::ES384, "p384-private-sec1.pem"),
        (Algorithm::EdDSA, "ed25519-private.pem"),
    ];
    for (alg, file) in cases {
        assert_eq!(
            parse_key(alg, &key_file(file)),
            Err(KeyError::PrivateKeyMaterial),
            "{file}"
        );
    }
    // Also when the private key follows a public one in the same text.
    let both = format!(
        "{}{}",
        key_file("p256-public.pem"),
        key_file("p256-private.pem")
    );
    assert_eq!(
        parse_key(Algorithm::ES256, &both),
        Err(KeyError::PrivateKeyMaterial)
    );
    // An encrypted private key.
    let encrypted =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
    assert_eq!(
        parse_key(Algorithm::RS256, encrypted),
        Err(KeyError::PrivateKeyMaterial)
    );
}

#[test]
fn private_jwks_are_refused() {
    let cases = [
        (Algorithm::RS256, "rsa2048-private.jwk.json"),
        (Algorithm::ES256, "p256-private.jwk.json"),
        (Algorithm::ES384, "p384-private.jwk.json"),
        (Algorithm::EdDSA, "ed25519-private.jwk.json"),
    ];
    for (alg, file) in cases {
        assert_eq!(
            parse_key(alg, &key_file(file)),
            Err(KeyError::PrivateKeyMaterial),
            "{file}"
        );
        let mut jwk = jwk_file(file);
        jwk.insert("kid".into(), "k".into());
        let set = parse_jwks(&json!({"keys": [jwk]})).unwrap();
        assert_eq!(
            set[0].outcome.as_ref().unwrap_err(),
            &KeyError::PrivateKeyMaterial,
            "{file}"
        );
    }
    // Any single private member is enough, whatever its value.
    let public = jwk_file("rsa2048-public.jwk.json");
    for member in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
        assert_eq!(
            parse_key(Algorithm::RS256, &with(public.clone(), member, "".into())),
            Err(KeyError::PrivateKeyMaterial),
            "{member}"
        );
    }
}

#[test]
fn certificates_are_refused() {
    let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        parse_key(Algorithm::RS256, cert),
        Err(KeyError::Invalid(_))
    ));
}

#[test]
fn jwk_use_and_key_ops() {
    let base = jwk_file("p256-public.jwk.json");
    let refused = |text: String| {
        let result = parse_key(Algorithm::ES256, &text);
        assert!(
            matches!(result, Err(KeyError::NotForSignatures(_))),
            "{text}: {result:?}"
        );
        let mut value: Value = text.parse().unwrap();
        value["kid"] = "k".into();
        let set = parse_jwks(&json!({"keys": [value]})).unwrap();
        assert!(
            matches!(set[0].outcome, Err(KeyError::NotForSignatures(_))),
            "{text}"
        );
    };
    refused(with(base.clone(), "use", "enc".into()));
    refused(with(base.clone(), "use", "SIG".into()));
    refused(with(base.clone(), "use", "".into()));
    refused(with(base.clone(), "use", json!(["sig"])));
    refused(with(base.clone(), "use", Value::Null));
    refused(with(base.clone(), "key_ops", json!(["encrypt"])));
    refused(with(base.clone(), "key_ops", json!(["sign"])));
    refused(with(base.clone(), "key_ops", json!([])));
    refused(with(base.clone(), "key_ops", json!("verify")));
    // Accepted: use sig, key_ops including verify.
    for ok in [
        with(base.clone(), "use", "sig".into()),
        with(base.clone(), "key_ops", json!(["verify"])),
        with(base.clone(), "key_ops", json!(["sign", "verify"])),
    ] {
        assert!(parse_key(Algorithm::ES256, &ok).is_ok(), "{ok}");
    }
    // HMAC JWKs follow the same rule.
    let oct = json!({"kty": "oct", "k": b64([1u8; 32]), "use": "enc"}).to_string();
    assert!(matches!(
        parse_key(Algorithm::HS256, &oct),
        Err(KeyError::NotForSignatures(_))
    ));
}

#[test]
fn unknown_jwk_alg_is_refused() {
    let base = jwk_file("rsa2048-public.jwk.json");
    for alg in ["RSA-OAEP", "RS1", "rs256", "none", ""] {
        assert_eq!(
            parse_key(Algorithm::RS256, &with(base.clone(), "alg", alg.into())),
            Err(KeyError::UnsupportedAlgorithm(alg.into()))
        );
    }
    assert!(matches!(
        parse_key(Algorithm::RS256, &with(base, "alg", 256.into())),
        Err(KeyError::Invalid(_))
    ));
}

#[test]
fn garbage_key_text() {
    for alg in Algorithm::ALL {
        for text in [
            "{",
            "{}",
            "[1]",
            "{\"kty\":5}",
            "-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----",
        ] {
            let result = parse_key(alg, text);
            // For HMAC algorithms non-JSON text is a secret (here too short).
            assert!(result.is_err(), "{alg} {text:?}: {result:?}");
        }
    }
    for alg in PUBLIC_ALGS {
        assert!(matches!(
            parse_key(alg, "not a key"),
            Err(KeyError::Invalid(_))
        ));
        assert!(matches!(
            parse_key(alg, &"A".repeat(400)),
            Err(KeyError::Invalid(_))
        ));
        assert!(matches!(parse_key(alg, ""), Err(KeyError::Invalid(_))));
    }
}

// ---- the same key in every spelling -------------------------------------------------------

#[test]
fn pem_and_jwk_of_the_same_key_are_stored_alike() {
    for alg in PUBLIC_ALGS {
        let from_pem = parse_key(alg, &pem_for(alg)).unwrap();
        let from_jwk = parse_key(alg, &text(&jwk_for(alg))).unwrap();
        assert_eq!(from_pem, from_jwk, "{alg}");
        // Extra members (kid, alg, use, x5t, ...) and whitespace do not change the stored key.
        let mut decorated = jwk_for(alg);
        decorated.insert("kid".into(), "some-kid".into());
        decorated.insert("alg".into(), alg.name().into());
        decorated.insert("use".into(), "sig".into());
        decorated.insert("x5t".into(), "abc".into());
        let pretty = serde_json::to_string_pretty(&Value::Object(decorated.clone())).unwrap();
        assert_eq!(
            parse_key(alg, &format!("\n  {pretty}\n")).unwrap(),
            from_pem,
            "{alg}"
        );
        assert_eq!(
            parse_key(alg, &format!("\r\n{}\r\n", pem_for(alg))).unwrap(),
            from_pem,
            "{alg}"
        );
        // The JWKS path stores the same.
        let set = parse_jwks(&json!({"keys": [decorated]})).unwrap();
        assert_eq!(
            set[0].outcome.as_ref().unwrap(),
            &(alg, from_pem.clone()),
            "{alg}"
        );

        // The stored form: only the defining members, plus alg and use.
        let stored = public_jwk(from_pem.clone());
        let mut expected = jwk_for(alg);
        expected.insert("alg".into(), alg.name().into());
        expected.insert("use".into(), "sig".into());
        assert_eq!(stored, expected, "{alg}");

        // Stored, rebuilt, and used: a token signed by the private key verifies.
        let key = VerifyingKey::new(alg, &from_pem).unwrap();
        assert_eq!(key.algorithm(), alg);
        let token = test_key(alg).token(None, &common::fresh_claims());
        let (input, sig) = token.rsplit_once('.').unwrap();
        assert!(key.verify(input.as_bytes(), &unb64(sig)), "{alg}");
    }
    // RSA: SPKI and PKCS#1 PEM are the same key.
    assert_eq!(
        parse_key(Algorithm::RS256, &key_file("rsa2048-public-pkcs1.pem")).unwrap(),
        parse_key(Algorithm::RS256, &key_file("rsa2048-public.pem")).unwrap()
    );
}

#[test]
fn stored_key_rows_are_rechecked() {
    // A stored JWK edited by hand to another algorithm or a bad point cannot build a verifier.
    let stored = public_jwk(parse_key(Algorithm::ES256, &key_file("p256-public.pem")).unwrap());
    assert!(VerifyingKey::new(Algorithm::ES384, &StoredKey::PublicJwk(stored.clone())).is_err());
    assert!(VerifyingKey::new(Algorithm::RS256, &StoredKey::PublicJwk(stored.clone())).is_err());
    let mut bad = stored.clone();
    bad.insert("y".into(), b64([1u8; 32]).into());
    assert!(VerifyingKey::new(Algorithm::ES256, &StoredKey::PublicJwk(bad)).is_err());
    let mut private = stored.clone();
    private.insert("d".into(), b64([1u8; 32]).into());
    assert_eq!(
        VerifyingKey::new(Algorithm::ES256, &StoredKey::PublicJwk(private)).unwrap_err(),
        KeyError::PrivateKeyMaterial
    );
    let mut keyring = Keyring::new();
    assert!(keyring
        .insert("k", Algorithm::ES384, &StoredKey::PublicJwk(stored), false)
        .is_err());
    assert!(keyring.is_empty());
    assert_eq!(keyring.active_keys(), 0);
}

// ---- key sets -----------------------------------------------------------------------------

#[test]
fn jwks_import() {
    let mut rsa = jwk_for(Algorithm::RS256);
    rsa.insert("kid".into(), "rsa".into());
    let mut ps = rsa.clone();
    ps.insert("kid".into(), "ps".into());
    ps.insert("alg".into(), "PS384".into());
    let mut p256 = jwk_for(Algorithm::ES256);
    p256.insert("kid".into(), "p256".into());
    let mut p384 = jwk_for(Algorithm::ES384);
    p384.insert("kid".into(), "p384".into());
    let mut ed = jwk_for(Algorithm::EdDSA);
    ed.insert("kid".into(), "ed".into());
    let document = json!({"keys": [
        rsa, ps, p256, p384, ed,
        {"kty": "oct", "k": b64([1u8; 64]), "kid": "secret", "alg": "HS256"},
        jwk_for(Algorithm::ES256),                     // no kid
        with(jwk_for(Algorithm::ES256), "kid", "".into()).parse::<Value>().unwrap(),
        with(jwk_for(Algorithm::ES256), "kid", "a\u{0}b".into()).parse::<Value>().unwrap(),
        with(jwk_for(Algorithm::ES256), "kid", 5.into()).parse::<Value>().unwrap(),
        "not an object",
    ]});
    let entries = parse_jwks(&document).unwrap();
    assert_eq!(entries.len(), 11);
    let algs: Vec<Option<Algorithm>> = entries
        .iter()
        .map(|e| e.outcome.as_ref().ok().map(|(a, _)| *a))
        .collect();
    assert_eq!(
        algs,
        vec![
            Some(Algorithm::RS256), // inferred for RSA
            Some(Algorithm::PS384), // declared
            Some(Algorithm::ES256),
            Some(Algorithm::ES384),
            Some(Algorithm::EdDSA),
            None, // symmetric keys never come from a key set
            None,
            None,
            None,
            None,
            None,
        ]
    );
    assert!(matches!(
        entries[5].outcome,
        Err(KeyError::NotForSignatures(_))
    ));
    for (index, entry) in entries.iter().enumerate() {
        assert_eq!(entry.index, index);
    }
    assert_eq!(entries[0].kid.as_deref(), Some("rsa"));
}

#[test]
fn jwks_duplicate_kids_refuse_every_copy() {
    let mut a = jwk_for(Algorithm::ES256);
    a.insert("kid".into(), "same".into());
    let mut b = jwk_for(Algorithm::EdDSA);
    b.insert("kid".into(), "same".into());
    let mut c = jwk_for(Algorithm::ES384);
    c.insert("kid".into(), "other".into());
    let entries = parse_jwks(&json!({"keys": [a, b, c]})).unwrap();
    assert!(entries[0].outcome.is_err() && entries[1].outcome.is_err());
    assert!(entries[2].outcome.is_ok());
}

#[test]
fn jwks_document_shape_and_size() {
    for bad in [
        json!([]),
        json!({}),
        json!({"keys": {}}),
        json!({"keys": "x"}),
        json!(null),
        json!({"Keys": []}),
    ] {
        assert!(parse_jwks(&bad).is_err(), "{bad}");
    }
    assert!(parse_jwks(&json!({"keys": []})).unwrap().is_empty());
    let key = |i: usize| {
        let mut jwk = jwk_for(Algorithm::EdDSA);
        jwk.insert("kid".into(), format!("k{i}").into());
        Value::Object(jwk)
    };
    let at_limit: Vec<Value> = (0..MAX_JWKS_KEYS).map(key).collect();
    assert_eq!(
        parse_jwks(&json!({ "keys": at_limit })).unwrap().len(),
        MAX_JWKS_KEYS
    );
    let over: Vec<Value> = (0..=MAX_JWKS_KEYS).map(key).collect();
    assert!(parse_jwks(&json!({ "keys": over })).is_err());
}

#[test]
fn kid_rules() {
    assert!(check_kid("k").is_ok());
    assert!(check_kid(&"k".repeat(MAX_KID_BYTES)).is_ok());
    assert!(check_kid("ключ-€").is_ok());
    for bad in [
        String::new(),
        "k".repeat(MAX_KID_BYTES + 1),
        "a\nb".into(),
        "\u{0}".into(),
        "a\u{7f}".into(),
        "é".repeat(MAX_KID_BYTES / 2 + 1),
    ] {
        assert!(check_kid(&bad).is_err(), "{bad:?}");
    }
}
