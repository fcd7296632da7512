//! In-server tests (`cargo pgrx test`): every SQL function's success path and every error it
//! raises, with its SQLSTATE. Each test runs in its own transaction, rolled back at the end.

#[pgrx::pg_schema]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{crypto::sign, Algorithm, EncodingKey};
    use pgrx::prelude::*;
    use pgrx::JsonB;
    use serde_json::{json, Value};

    const SECRET: &str = "in-server-test-secret-0123456789abcdef";
    /// RFC 8037 Appendix A.2's Ed25519 public key.
    const ED25519_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    /// Empties the keyring, adds the HS256 key `k1`, and defines `pg_temp.error_of(sql)`,
    /// which runs a statement and returns `SQLSTATE: message` of its error (NULL if none).
    fn setup() {
        Spi::run("truncate auth.keys cascade").unwrap();
        Spi::run(
            "create function pg_temp.error_of(statement text) returns text language plpgsql as $$
             begin execute statement; return null;
             exception when others then return sqlstate || ': ' || sqlerrm; end $$",
        )
        .unwrap();
        Spi::run(&format!("select auth.add_key('k1', 'HS256', '{SECRET}')")).unwrap();
    }

    /// The statement's clock in whole seconds, as the extension reads it (rounded down).
    fn now() -> i64 {
        Spi::get_one::<i64>("select floor(extract(epoch from statement_timestamp()))::int8")
            .unwrap()
            .unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// HMAC-signs any header and payload text with `secret`.
    fn sign_raw(header: &str, payload: &str, secret: &[u8]) -> String {
        let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let signature = sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{signing_input}.{signature}")
    }

    fn token(header: Value, claims: Value) -> String {
        sign_raw(&header.to_string(), &claims.to_string(), SECRET.as_bytes())
    }

    fn valid_claims() -> Value {
        json!({"sub": "3f1d5c62-5b8e-4c36-9a51-2a4b8f7c9e10", "exp": now() + 600, "role": "authenticated"})
    }

    fn good_token() -> String {
        token(json!({"alg": "HS256", "kid": "k1"}), valid_claims())
    }

    fn error_of(statement: &str) -> Option<String> {
        Spi::get_one_with_args::<String>("select pg_temp.error_of($1)", &[statement.into()])
            .unwrap()
    }

    fn verify_error(token: &str) -> String {
        error_of(&format!(
            "select auth.verify({})",
            pgrx::spi::quote_literal(token)
        ))
        .expect("the token should have been rejected")
    }

    fn verify(token: &str) -> Value {
        Spi::get_one_with_args::<JsonB>("select auth.verify($1)", &[token.into()])
            .unwrap()
            .unwrap()
            .0
    }

    #[pg_test]
    fn verify_returns_the_claims() {
        setup();
        assert_eq!(verify(&good_token()), valid_claims());
    }

    #[pg_test]
    fn verify_refuses_duplicate_names() {
        setup();
        let exp = now() + 600;
        let payload = format!(r#"{{"sub":"a","sub":"b","exp":{exp}}}"#);
        let token = sign_raw(r#"{"alg":"HS256","kid":"k1"}"#, &payload, SECRET.as_bytes());
        assert_eq!(verify_error(&token), "28000: invalid token: malformed");
        let payload = format!(r#"{{"sub":"a","exp":{exp}}}"#);
        let token = sign_raw(
            r#"{"alg":"none","alg":"HS256","kid":"k1"}"#,
            &payload,
            SECRET.as_bytes(),
        );
        assert_eq!(verify_error(&token), "28000: invalid token: malformed");
    }

    #[pg_test]
    fn verify_is_stable_and_parallel_restricted() {
        let (volatility, parallel) = Spi::get_two::<String, String>(
            "select provolatile::text, proparallel::text from pg_proc where oid = 'auth.verify'::regproc",
        )
        .unwrap();
        assert_eq!(volatility.as_deref(), Some("s"));
        assert_eq!(parallel.as_deref(), Some("r"));
    }

    #[pg_test]
    fn no_key_is_its_own_error() {
        setup();
        Spi::run("truncate auth.keys cascade").unwrap();
        assert_eq!(
            verify_error(&good_token()),
            "55000: no verification key is configured"
        );
        Spi::run(&format!("select auth.add_key('k1', 'HS256', '{SECRET}')")).unwrap();
        Spi::run("select auth.retire_key('k1')").unwrap();
        let without_kid = token(json!({"alg": "HS256"}), valid_claims());
        assert_eq!(
            verify_error(&without_kid),
            "55000: no verification key is configured"
        );
    }

    #[pg_test]
    fn structural_rejections() {
        setup();
        let good = good_token();
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            (format!("{}.{}", parts[0], parts[1]), "malformed"),
            (format!("{good}.{}", parts[2]), "malformed"),
            (format!("{good}="), "malformed"),
            (
                format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
                "malformed",
            ),
            (token(json!(["alg", "HS256"]), valid_claims()), "malformed"),
            (
                token(json!({"alg": 256, "kid": "k1"}), valid_claims()),
                "malformed",
            ),
            (token(json!({"kid": "k1"}), valid_claims()), "malformed"),
            ("x".repeat(9000), "too large"),
            (
                token(json!({"alg": "none", "kid": "k1"}), valid_claims()),
                "unsupported algorithm",
            ),
            (
                token(json!({"alg": "hs256", "kid": "k1"}), valid_claims()),
                "unsupported algorithm",
            ),
            (
                token(json!({"alg": "ES512", "kid": "k1"}), valid_claims()),
                "unsupported algorithm",
            ),
            (
                token(json!({"alg": "HS256", "kid": "nope"}), valid_claims()),
                "unknown key",
            ),
            (
                token(json!({"alg": "HS384", "kid": "k1"}), valid_claims()),
                "algorithm mismatch",
            ),
            (
                sign_raw(
                    r#"{"alg":"HS256","kid":"k1"}"#,
                    "not json",
                    SECRET.as_bytes(),
                ),
                "malformed",
            ),
            (
                sign_raw(r#"{"alg":"HS256","kid":"k1"}"#, "[1,2]", SECRET.as_bytes()),
                "malformed",
            ),
            (
                sign_raw(
                    r#"{"alg":"HS256","kid":"k1"}"#,
                    &valid_claims().to_string(),
                    b"another-secret-of-enough-length-1234567",
                ),
                "bad signature",
            ),
        ];
        for (token, reason) in cases {
            assert_eq!(
                verify_error(&token),
                format!("28000: invalid token: {reason}"),
                "{token}"
            );
        }
    }

    #[pg_test]
    fn forbidden_headers() {
        setup();
        for name in ["crit", "jwk", "jku", "x5u", "x5c", "enc", "zip"] {
            let mut header = json!({"alg": "HS256", "kid": "k1"});
            header[name] = json!("x");
            assert_eq!(
                verify_error(&token(header, valid_claims())),
                "28000: invalid token: forbidden header",
                "{name}"
            );
        }
    }

    #[pg_test]
    fn kid_selection() {
        setup();
        let without_kid = token(json!({"alg": "HS256"}), valid_claims());
        assert_eq!(
            verify(&without_kid),
            valid_claims(),
            "one active key: a token without kid uses it"
        );
        Spi::run(&format!(
            "select auth.add_key('k2', 'HS256', '{SECRET}-two')"
        ))
        .unwrap();
        assert_eq!(
            verify_error(&without_kid),
            "28000: invalid token: unknown key"
        );
        assert_eq!(
            Spi::get_one::<bool>("select auth.retire_key('k1')").unwrap(),
            Some(true)
        );
        assert_eq!(
            Spi::get_one::<bool>("select auth.retire_key('k1')").unwrap(),
            Some(false)
        );
        assert_eq!(
            Spi::get_one::<bool>("select auth.retire_key('missing')").unwrap(),
            Some(false)
        );
        assert_eq!(
            verify_error(&good_token()),
            "28000: invalid token: retired key"
        );
        // Adding an existing kid replaces it, and the key is active again.
        Spi::run(&format!("select auth.add_key('k1', 'HS256', '{SECRET}')")).unwrap();
        assert_eq!(verify(&good_token()), valid_claims());
    }

    #[pg_test]
    fn time_claims() {
        setup();
        let now = now();
        let header = json!({"alg": "HS256", "kid": "k1"});
        let reason = |claims: Value| verify_error(&token(header.clone(), claims));
        assert_eq!(
            reason(json!({"sub": "x"})),
            "28000: invalid token: missing claim"
        );
        assert_eq!(
            reason(json!({"exp": now - 31})),
            "28000: invalid token: expired"
        );
        assert_eq!(
            reason(json!({"exp": now - 30})),
            "28000: invalid token: expired"
        );
        assert_eq!(
            verify(&token(header.clone(), json!({"exp": now - 29}))),
            json!({"exp": now - 29})
        );
        assert_eq!(
            reason(json!({"exp": now + 60, "nbf": now + 31})),
            "28000: invalid token: not yet valid"
        );
        assert_eq!(
            reason(json!({"exp": now + 60, "iat": now + 31})),
            "28000: invalid token: issued in the future"
        );
        Spi::run("set local pg_session_auth.leeway = 0").unwrap();
        assert_eq!(reason(json!({"exp": now})), "28000: invalid token: expired");
        assert_eq!(
            reason(json!({"exp": now + 60, "nbf": now + 1})),
            "28000: invalid token: not yet valid"
        );
    }

    #[pg_test]
    fn claim_types() {
        setup();
        let exp = now() + 600;
        let header = json!({"alg": "HS256", "kid": "k1"});
        for claims in [
            json!({"exp": "never"}),
            json!({"exp": true}),
            json!({"exp": null}),
            json!({"exp": exp, "nbf": "soon"}),
            json!({"exp": exp, "iat": [1]}),
            json!({"exp": exp, "aud": 123}),
            json!({"exp": exp, "aud": [1]}),
            json!({"exp": exp, "iss": {}}),
            json!({"exp": exp, "sub": 5}),
            json!({"exp": exp, "jti": []}),
        ] {
            assert_eq!(
                verify_error(&token(header.clone(), claims.clone())),
                "28000: invalid token: invalid claim type",
                "{claims}"
            );
        }
        let nul = token(header.clone(), json!({"exp": exp, "sub": "a\u{0}b"}));
        assert_eq!(verify_error(&nul), "28000: invalid token: malformed");
        let nul_key = token(header, json!({"exp": exp, "x\u{0}": 1}));
        assert_eq!(verify_error(&nul_key), "28000: invalid token: malformed");
    }

    #[pg_test]
    fn issuer_and_audience() {
        setup();
        let exp = now() + 600;
        let header = json!({"alg": "HS256", "kid": "k1"});
        let check = |claims: Value| {
            error_of(&format!(
                "select auth.verify('{}')",
                token(header.clone(), claims)
            ))
        };
        Spi::run("set local pg_session_auth.issuer = 'https://issuer.example'").unwrap();
        Spi::run("set local pg_session_auth.audience = 'api'").unwrap();
        let ok = json!({"exp": exp, "iss": "https://issuer.example", "aud": "api"});
        assert_eq!(check(ok), None);
        assert_eq!(
            check(json!({"exp": exp, "iss": "https://issuer.example", "aud": ["web", "api"]})),
            None
        );
        assert_eq!(
            check(json!({"exp": exp, "aud": "api"})).as_deref(),
            Some("28000: invalid token: missing claim")
        );
        assert_eq!(
            check(json!({"exp": exp, "iss": "https://evil.example", "aud": "api"})).as_deref(),
            Some("28000: invalid token: wrong issuer")
        );
        assert_eq!(
            check(json!({"exp": exp, "iss": "https://issuer.example"})).as_deref(),
            Some("28000: invalid token: missing claim")
        );
        assert_eq!(
            check(json!({"exp": exp, "iss": "https://issuer.example", "aud": ["web"]})).as_deref(),
            Some("28000: invalid token: wrong audience")
        );
    }

    #[pg_test]
    fn max_token_bytes_applies_before_parsing() {
        setup();
        Spi::run("set local pg_session_auth.max_token_bytes = 256").unwrap();
        let big = token(
            json!({"alg": "HS256", "kid": "k1"}),
            json!({"exp": now() + 600, "pad": "p".repeat(300)}),
        );
        assert_eq!(verify_error(&big), "28000: invalid token: too large");
        assert_eq!(
            verify_error(&"%".repeat(257)),
            "28000: invalid token: too large"
        );
    }

    #[pg_test]
    fn add_key_rejects_unusable_keys() {
        setup();
        let cases = [
            "select auth.add_key('s', 'HS256', repeat('x', 31))",
            "select auth.add_key('s', 'HS384', repeat('x', 47))",
            "select auth.add_key('s', 'HS512', repeat('x', 63))",
            "select auth.add_key('s', 'none', 'whatever')",
            "select auth.add_key('s', 'ES512', 'whatever')",
            "select auth.add_key('s', 'RS256', 'not a key')",
            "select auth.add_key('', 'HS256', repeat('x', 32))",
            "select auth.add_key('s', 'ES256', '{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}')",
            "select auth.add_key('s', 'EdDSA', '{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\",\"use\":\"enc\"}')",
            "select auth.add_key('s', 'EdDSA', '{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\",\"d\":\"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\"}')",
        ];
        for statement in cases {
            let error = error_of(statement).unwrap_or_else(|| panic!("accepted: {statement}"));
            assert!(error.starts_with("22023: "), "{statement}: {error}");
        }
        let short =
            error_of("select auth.add_key('s', 'HS256', 'short-secret-never-shown')").unwrap();
        assert!(!short.contains("short-secret-never-shown"), "{short}");
    }

    #[pg_test]
    fn asymmetric_keys_and_jwks() {
        setup();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": ED25519_X});
        Spi::run_with_args(
            "select auth.add_key('ed', 'EdDSA', $1)",
            &[jwk.to_string().into()],
        )
        .unwrap();
        let jwks = Spi::get_one::<JsonB>("select auth.jwks()")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(
            jwks,
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED25519_X, "alg": "EdDSA", "use": "sig", "kid": "ed"}]}),
            "only the public key, never the HMAC secret"
        );
        // RFC 8037 A.4: a valid EdDSA signature, but its payload is no JSON claim set.
        let rfc_token = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
        Spi::run("select auth.retire_key('k1')").unwrap();
        assert_eq!(verify_error(rfc_token), "28000: invalid token: malformed");
        let tampered = rfc_token.replace("hgyY", "hgyZ");
        assert_eq!(
            verify_error(&tampered),
            "28000: invalid token: bad signature"
        );
        // An HS256 token for the EdDSA key: the algorithm is the key's, not the token's.
        let confused = sign_raw(
            r#"{"alg":"HS256","kid":"ed"}"#,
            &valid_claims().to_string(),
            ED25519_X.as_bytes(),
        );
        assert_eq!(
            verify_error(&confused),
            "28000: invalid token: algorithm mismatch"
        );
    }

    #[pg_test]
    fn import_jwks_counts_and_skips() {
        setup();
        let jwks = json!({"keys": [
            {"kid": "ed1", "kty": "OKP", "crv": "Ed25519", "x": ED25519_X},
            {"kid": "ed2", "kty": "OKP", "crv": "Ed25519", "x": ED25519_X, "alg": "EdDSA", "use": "sig"},
            {"kty": "OKP", "crv": "Ed25519", "x": ED25519_X},
            {"kid": "enc", "kty": "OKP", "crv": "Ed25519", "x": ED25519_X, "use": "enc"},
            {"kid": "oct", "kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"},
            {"kid": "x448", "kty": "OKP", "crv": "Ed448", "x": "AAAA"},
        ]});
        let imported =
            Spi::get_one_with_args::<i32>("select auth.import_jwks($1)", &[JsonB(jwks).into()])
                .unwrap();
        assert_eq!(imported, Some(2));
        let kids =
            Spi::get_one::<String>("select string_agg(kid, ',' order by kid) from auth.keys")
                .unwrap();
        assert_eq!(kids.as_deref(), Some("ed1,ed2,k1"));
        let bad_document = error_of("select auth.import_jwks('{\"keys\": 5}')").unwrap();
        assert!(bad_document.starts_with("22023: "), "{bad_document}");
    }

    /// The README's table of SQLSTATEs is exactly what `errors::Failure` raises, plus what
    /// the SQL functions raise; each code the Rust side raises is one pgrx knows.
    #[pg_test]
    fn every_sqlstate_is_documented() {
        use crate::errors::{error_code, Failure, SQLSTATES};
        use std::collections::BTreeSet;
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Errors\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("the README has an Errors section");
        let documented: BTreeSet<&str> = section
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.get(..6)?.strip_suffix('`'))
            .filter(|code| {
                code.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            })
            .collect();
        let raised: BTreeSet<&str> = SQLSTATES.iter().map(|(code, _)| *code).collect();
        assert_eq!(
            documented, raised,
            "README's Errors table vs errors::SQLSTATES"
        );
        let mut produced = BTreeSet::new();
        for failure in Failure::one_of_each() {
            produced.insert(failure.sqlstate());
            if failure != Failure::RequestRefused {
                assert_ne!(
                    failure.error_code(),
                    pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    "{failure:?}"
                );
            }
        }
        assert_eq!(produced, raised, "errors::SQLSTATES vs the variants");
        for sql in [
            include_str!("../sql/bootstrap.sql"),
            include_str!("../sql/finalize.sql"),
        ] {
            for raise in sql.split("raise sqlstate '").skip(1) {
                let code = &raise[..5];
                assert!(
                    raised.contains(code),
                    "SQL raises {code}, not in errors::SQLSTATES"
                );
            }
        }
        assert_eq!(
            error_code("28000"),
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION
        );
    }

    /// The table CHECKs of sql/bootstrap.sql state the limits of `pg_session_auth_core`
    /// (`limits.rs`) and its algorithm list.
    #[pg_test]
    fn table_checks_match_the_limits() {
        use pg_session_auth_core::{Algorithm, MAX_ID_BYTES, MAX_KID_BYTES};
        let checks = |table: &str| -> String {
            Spi::get_one::<String>(&format!(
                "select string_agg(pg_get_constraintdef(oid), ' ; ') from pg_constraint \
                 where conrelid = 'auth.{table}'::regclass and contype = 'c'"
            ))
            .unwrap()
            .unwrap()
        };
        let between = |column: &str, max: usize| {
            format!("((octet_length({column}) >= 1) AND (octet_length({column}) <= {max}))")
        };
        let keys = checks("keys");
        assert!(keys.contains(&between("kid", MAX_KID_BYTES)), "{keys}");
        assert!(keys.contains(&between("issuer", MAX_ID_BYTES)), "{keys}");
        let listed: std::collections::BTreeSet<&str> = keys
            .split("alg = ANY (ARRAY[")
            .nth(1)
            .and_then(|rest| rest.split("])").next())
            .expect("auth.keys checks alg against a list")
            .split(", ")
            .map(|item| item.trim_end_matches("::text").trim_matches('\''))
            .collect();
        let supported: std::collections::BTreeSet<&str> =
            Algorithm::ALL.iter().map(|alg| alg.name()).collect();
        assert_eq!(listed, supported);
        let users = checks("revoked_users");
        assert!(users.contains(&between("user_id", MAX_ID_BYTES)), "{users}");
        assert!(
            users.contains(&format!("(octet_length(issuer) <= {MAX_ID_BYTES})")),
            "{users}"
        );
        let tokens = checks("revoked_tokens");
        assert!(tokens.contains(&between("jti", MAX_ID_BYTES)), "{tokens}");
    }

    /// Every counter of `auth.stats()` has a word of its own, and a name of its own; the
    /// built-in rules of the code are the rows the extension installs, and each rejection
    /// reason the core can give is one the counters know.
    #[pg_test]
    fn counters_rules_and_reasons_agree() {
        use crate::activity::{rules::BUILT_IN_RULES, stats};
        assert!(stats::indices_are_distinct_and_fit());
        let names = stats::names();
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        let installed = Spi::get_one::<String>(
            "select string_agg(rule, ',' order by rule) from auth.activity_rules",
        )
        .unwrap()
        .unwrap();
        let mut built_in: Vec<&str> = BUILT_IN_RULES.to_vec();
        built_in.sort_unstable();
        assert_eq!(installed, built_in.join(","));
        use pg_session_auth_core::Rejection;
        for rejection in [
            Rejection::Malformed("m"),
            Rejection::TooLarge { size: 2, limit: 1 },
            Rejection::UnsupportedAlgorithm("a".into()),
            Rejection::UnknownKey("k".into()),
            Rejection::RetiredKey("k".into()),
            Rejection::AlgorithmMismatch {
                token: "a".into(),
                key: "b",
            },
            Rejection::ForbiddenHeader("h"),
            Rejection::BadSignature,
            Rejection::Expired,
            Rejection::NotYetValid,
            Rejection::IssuedInFuture,
            Rejection::WrongIssuer,
            Rejection::KeyIssuerMismatch,
            Rejection::WrongAudience,
            Rejection::MissingClaim("c"),
            Rejection::InvalidClaimType("c"),
            Rejection::RoleNotAllowed("r".into()),
            Rejection::LifetimeTooLong { limit: 1 },
            Rejection::Revoked,
        ] {
            assert!(
                stats::TOKEN_REASONS.contains(&rejection.reason().as_str()),
                "{rejection:?}"
            );
        }
    }
}
