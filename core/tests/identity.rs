//! What the claim functions read, role claims, and the revocation rules.

use std::collections::HashMap;

use pg_session_auth_core::identity::{
    canonical_user_id, claim_as_text, has_expired, parse_uuid, session_id, uid, RolePolicy,
};
use pg_session_auth_core::revocation::{is_revoked, RevocationSource, UserCutoff};
use pg_session_auth_core::{Claims, Rejection};
use serde_json::json;

fn claims(value: serde_json::Value) -> Claims {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

const ID: [u8; 16] = [
    0x0b, 0x4f, 0x8a, 0x56, 0x2f, 0x1c, 0x4a, 0x3e, 0x8d, 0x77, 0x5c, 0x9e, 0x1b, 0x2a, 0x3d, 0x40,
];

#[test]
fn uuids_parse_as_postgresql_does() {
    for accepted in [
        "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40",
        "0B4F8A56-2F1C-4A3E-8D77-5C9E1B2A3D40",
        "{0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40}",
        "0b4f8a562f1c4a3e8d775c9e1b2a3d40",
        "{0b4f8a562f1c4a3e8d775c9e1b2a3d40}",
        "0b4f-8a56-2f1c-4a3e-8d77-5c9e-1b2a-3d40",
    ] {
        assert_eq!(parse_uuid(accepted), Some(ID), "{accepted}");
    }
    for refused in [
        "",
        "urn:uuid:0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40",
        "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d4",
        "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d400",
        "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40-",
        "-0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40",
        "0b4f8a5-62f1c-4a3e-8d77-5c9e1b2a3d40",
        "{0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40",
        "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40}",
        "0b4f8a56--2f1c-4a3e-8d77-5c9e1b2a3d40",
        " 0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40",
        "0g4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40",
        "auth0|12345",
    ] {
        assert_eq!(parse_uuid(refused), None, "{refused}");
    }
}

#[test]
fn one_subject_however_its_uuid_is_written() {
    let canonical = "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40";
    assert_eq!(
        canonical_user_id("{0B4F8A562F1C4A3E8D775C9E1B2A3D40}"),
        canonical
    );
    assert_eq!(canonical_user_id(canonical), canonical);
    assert_eq!(canonical_user_id("auth0|12345"), "auth0|12345");
    assert_eq!(canonical_user_id("User@Example.com"), "User@Example.com");
}

#[test]
fn claims_read_as_sql_arrow_text() {
    let c =
        claims(json!({"s": "x", "e": "", "n": 5, "b": true, "z": null, "o": {"a": 1}, "a": [1]}));
    assert_eq!(claim_as_text(&c, "s").as_deref(), Some("x"));
    assert_eq!(claim_as_text(&c, "e").as_deref(), Some(""));
    assert_eq!(claim_as_text(&c, "n").as_deref(), Some("5"));
    assert_eq!(claim_as_text(&c, "b").as_deref(), Some("true"));
    assert_eq!(claim_as_text(&c, "z"), None);
    assert_eq!(claim_as_text(&c, "missing"), None);
    assert_eq!(claim_as_text(&c, "o").as_deref(), Some(r#"{"a":1}"#));
    assert_eq!(claim_as_text(&c, "a").as_deref(), Some("[1]"));
}

#[test]
fn uid_and_session_id() {
    let c = claims(
        json!({"sub": "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40", "sid": "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40"}),
    );
    assert_eq!(uid(&c), Some(ID));
    assert_eq!(session_id(&c), Some(ID), "sid when there is no session_id");
    let both = claims(
        json!({"session_id": "00000000-0000-0000-0000-000000000001", "sid": "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40"}),
    );
    assert_eq!(
        session_id(&both).map(|b| b[15]),
        Some(1),
        "session_id first"
    );
    assert_eq!(uid(&claims(json!({"sub": "auth0|1"}))), None);
    assert_eq!(uid(&claims(json!({"sub": 5}))), None);
}

#[test]
fn expiry_at_read_time() {
    let c = claims(json!({"exp": 1000}));
    assert!(!has_expired(&c, 969, 30));
    assert!(
        has_expired(&c, 1030, 30),
        "expired once now >= exp + leeway"
    );
    assert!(has_expired(&c, 1000, 0));
    assert!(
        has_expired(&claims(json!({})), 0, 30),
        "no exp counts as expired"
    );
}

#[test]
fn role_claims() {
    let policy = RolePolicy::new("role", " anon , authenticated,");
    assert_eq!(policy.allowed, vec!["anon", "authenticated"]);
    let role = |value: serde_json::Value| {
        policy
            .requested_role(&claims(json!({"role": value})))
            .map(|r| r.map(str::to_owned))
    };
    assert_eq!(
        role(json!("authenticated")),
        Ok(Some("authenticated".into()))
    );
    for refused in ["postgres", "", "none", "Authenticated", "\"anon\"", " anon"] {
        assert_eq!(
            role(json!(refused)),
            Err(Rejection::RoleNotAllowed(refused.into())),
            "{refused}"
        );
    }
    for wrong_type in [json!(5), json!(null), json!(["anon"]), json!({"r": "anon"})] {
        assert!(
            matches!(
                role(wrong_type.clone()),
                Err(Rejection::InvalidClaimType(_))
            ),
            "{wrong_type}"
        );
    }
    assert_eq!(
        policy.requested_role(&claims(json!({"sub": "x"}))),
        Ok(None),
        "no role claim"
    );
    let custom = RolePolicy::new("app_role", "reader");
    assert_eq!(
        custom.requested_role(&claims(json!({"role": "postgres", "app_role": "reader"}))),
        Ok(Some("reader"))
    );
}

#[test]
fn user_cutoffs() {
    const A: [u8; 16] = [0xa; 16];
    const B: [u8; 16] = [0xb; 16];
    let all = UserCutoff {
        revoked_before: Some(100.0),
        ..UserCutoff::default()
    };
    assert!(all.revokes(Some(100.0), Some(A)), "issued at the cut-off");
    assert!(!all.revokes(Some(100.5), Some(A)));
    assert!(all.revokes(None, None), "no iat: cannot show it came later");

    let others = UserCutoff {
        others_revoked_before: Some(100.0),
        keep_session: Some(A),
        ..UserCutoff::default()
    };
    assert!(!others.revokes(Some(50.0), Some(A)), "the kept session");
    assert!(others.revokes(Some(50.0), Some(B)));
    assert!(others.revokes(Some(50.0), None));
    assert!(!others.revokes(Some(150.0), Some(B)));
    assert!(
        !others.revokes(None, Some(A)),
        "the kept session, even without iat"
    );

    let both = UserCutoff {
        revoked_before: Some(60.0),
        others_revoked_before: Some(100.0),
        keep_session: Some(A),
    };
    assert!(
        both.revokes(Some(50.0), Some(A)),
        "the all-sessions cut-off applies to the kept one too"
    );
    assert!(!both.revokes(Some(70.0), Some(A)));
    assert!(both.revokes(Some(70.0), Some(B)));
}

#[derive(Default)]
struct Table {
    sessions: Vec<[u8; 16]>,
    tokens: Vec<&'static str>,
    users: HashMap<String, UserCutoff>,
    lookups: Vec<String>,
}

impl RevocationSource for Table {
    fn session_revoked(&mut self, id: &[u8; 16]) -> bool {
        self.lookups.push("session".into());
        self.sessions.contains(id)
    }
    fn token_revoked(&mut self, jti: &str) -> bool {
        self.lookups.push("token".into());
        self.tokens.contains(&jti)
    }
    fn user_cutoff(&mut self, user_id: &str, issuer: &str) -> Option<UserCutoff> {
        self.lookups.push(format!("user {user_id}"));
        self.users.get(&format!("{issuer}|{user_id}")).copied()
    }
}

#[test]
fn revocation_rules() {
    let mut table = Table {
        sessions: vec![ID],
        tokens: vec!["t-1"],
        ..Table::default()
    };
    table.users.insert(
        "|0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40".into(),
        UserCutoff {
            revoked_before: Some(100.0),
            ..UserCutoff::default()
        },
    );
    let revoked = |table: &mut Table, value| is_revoked(&claims(value), table);
    assert!(revoked(&mut table, json!({"jti": "t-1"})));
    assert!(revoked(
        &mut table,
        json!({"session_id": "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40"})
    ));
    assert!(revoked(
        &mut table,
        json!({"sid": "{0b4f8a562f1c4a3e8d775c9e1b2a3d40}"})
    ));
    // A UUID subject is looked up in its canonical form, however the token writes it.
    assert!(revoked(
        &mut table,
        json!({"sub": "0B4F8A56-2F1C-4A3E-8D77-5C9E1B2A3D40", "iat": 99})
    ));
    assert!(table
        .lookups
        .contains(&"user 0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40".to_string()));
    assert!(!revoked(
        &mut table,
        json!({"sub": "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40", "iat": 101})
    ));
    assert!(!revoked(
        &mut table,
        json!({"sub": "someone else", "jti": "t-2", "session_id": "00000000-0000-0000-0000-000000000000"})
    ));
    table.lookups.clear();
    assert!(!revoked(&mut table, json!({"exp": 5})));
    assert!(
        table.lookups.is_empty(),
        "nothing to look up without jti, session or sub"
    );
}

#[test]
fn user_cutoffs_are_per_issuer() {
    const USER: &str = "0b4f8a56-2f1c-4a3e-8d77-5c9e1b2a3d40";
    let cutoff = UserCutoff {
        revoked_before: Some(100.0),
        ..UserCutoff::default()
    };
    let mut table = Table::default();
    table
        .users
        .insert(format!("https://a.example|{USER}"), cutoff);
    let revoked = |table: &mut Table, value| is_revoked(&claims(value), table);
    assert!(revoked(
        &mut table,
        json!({"sub": USER, "iss": "https://a.example", "iat": 99})
    ));
    assert!(
        !revoked(
            &mut table,
            json!({"sub": USER, "iss": "https://b.example", "iat": 99})
        ),
        "the same subject at another issuer is another user"
    );
    assert!(
        !revoked(&mut table, json!({"sub": USER, "iat": 99})),
        "a token without iss is not under one issuer's cut-off"
    );
    table.users.insert(format!("|{USER}"), cutoff);
    for iss in [json!("https://b.example"), json!(""), json!(null), json!(7)] {
        assert!(
            revoked(&mut table, json!({"sub": USER, "iss": iss, "iat": 99})),
            "a cut-off for every issuer applies whatever the iss ({iss})"
        );
    }
}
