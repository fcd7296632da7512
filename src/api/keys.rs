//! Keyring management. These functions are SECURITY DEFINER (the table is closed to
//! everyone else) and executable only by the extension owner, superusers and members of
//! `session_auth_admin` (see `sql/finalize.sql`).

use pg_session_auth_core::{
    check_kid, parse_jwks, parse_key, Algorithm, StoredKey, VerifyingKey, MAX_ID_BYTES,
};
use pgrx::prelude::*;
use pgrx::IntoDatum;

use crate::audit;
use crate::errors::{invalid_argument, raise, required, Failure};
use crate::jsonb::JsonbArgument;
use crate::pg::jsonb::object_to_jsonb;
use crate::pg::owner_spi::{self, text_arg};

/// The algorithm named `name`; `22023` listing the supported ones otherwise.
pub(crate) fn algorithm(name: &str) -> Algorithm {
    Algorithm::from_name(name).unwrap_or_else(|| {
        let supported: Vec<&str> = Algorithm::ALL.iter().map(|alg| alg.name()).collect();
        raise(invalid_argument(
            format!("unsupported algorithm {name:?}"),
            Some(format!("Supported algorithms: {}.", supported.join(", "))),
        ))
    })
}

/// An issuer a key is bound to: 1 to [`MAX_ID_BYTES`] bytes.
fn checked_issuer(issuer: Option<&str>) -> Option<&str> {
    let issuer = issuer?;
    if issuer.is_empty() || issuer.len() > MAX_ID_BYTES {
        raise(invalid_argument(
            format!("an issuer must be 1 to {MAX_ID_BYTES} bytes"),
            None,
        ));
    }
    Some(issuer)
}

/// Whether `kid` belongs to a key this database signs with (whose verification half only
/// its own functions may change).
fn is_signing_key(kid: &str) -> bool {
    let Some((_, owner)) = owner_spi::relation_and_owner("signing_key_material") else {
        return false;
    };
    owner_spi::select(
        Some(owner),
        include_str!("../queries/signing_key_exists.sql"),
        &[text_arg(kid)],
        |row| row.get::<bool>(0),
    )
    .first()
        == Some(&Some(true))
}

/// Inserts or replaces a key (a replaced key is active again, bound to `issuer` or to none).
/// A signing key's kid is refused: replacing its public half would break (or, with another
/// algorithm, misuse) the private half.
fn store_key(kid: &str, alg: Algorithm, stored: &StoredKey, issuer: Option<&str>) {
    if is_signing_key(kid) {
        raise(invalid_argument(
            format!("the kid {kid:?} is a signing key of this database"),
            Some("Signing keys are changed only through auth.generate_key(), auth.rotate_signing_key() and auth.retire_key().".into()),
        ));
    }
    if let Err(error) = VerifyingKey::new(alg, stored) {
        raise(Failure::UnusableKey(error));
    }
    let (secret, public_jwk) = match stored {
        StoredKey::Secret(secret) => (Some(secret.clone()), None),
        StoredKey::PublicJwk(jwk) => (None, Some(object_to_jsonb(jwk))),
    };
    let Some((relid, owner)) = owner_spi::relation_and_owner("keys") else {
        raise(Failure::MissingTables {
            what: "auth.keys is",
        });
    };
    let args = [
        text_arg(kid),
        text_arg(alg.name()),
        (pg_sys::BYTEAOID, secret.into_datum()),
        (pg_sys::JSONBOID, public_jwk),
        (pg_sys::TEXTOID, issuer.into_datum()),
    ];
    // Through owner_spi, not pgrx's Spi: that one asks for a transaction id first, which on a
    // hot standby is an internal error instead of PostgreSQL's read-only error (25006).
    if owner_spi::has_column(relid, "issuer") {
        owner_spi::execute(owner, include_str!("../queries/keys_store.sql"), &args);
    } else if issuer.is_none() {
        // A database not yet updated to 0.3.0 (ALTER EXTENSION pg_session_auth UPDATE).
        owner_spi::execute(
            owner,
            include_str!("../queries/keys_store_0.2.0.sql"),
            &args[..4],
        );
    } else {
        raise(Failure::NotUpdated {
            what: "keys can be bound to an issuer",
        });
    }
}

/// `auth.add_key(kid, alg, key, issuer)`: adds or replaces a verification key. `key` is the
/// HMAC secret, a PEM public key, or a JWK as JSON text; it must fit `alg`. With `issuer`,
/// tokens the key verifies must carry exactly that `iss`.
#[pg_extern(security_definer, volatile, parallel_unsafe, name = "add_key")]
#[search_path(pg_catalog, pg_temp)]
pub fn add_key_for_issuer(
    kid: Option<&str>,
    alg: Option<&str>,
    key: Option<&str>,
    issuer: default!(Option<&str>, "NULL"),
) {
    let (kid, alg, key) = (
        required(kid, "kid"),
        required(alg, "alg"),
        required(key, "key"),
    );
    if let Err(error) = check_kid(kid) {
        raise(Failure::UnusableKey(error));
    }
    let alg = algorithm(alg);
    let issuer = checked_issuer(issuer);
    match parse_key(alg, key) {
        Ok(stored) => store_key(kid, alg, &stored, issuer),
        Err(error) => raise(Failure::UnusableKey(error)),
    }
}

/// `auth.import_jwks(jwks, issuer)`: adds or replaces every usable public key of a JWKS
/// document (bound to `issuer`, when given) and returns how many; each key it skips is
/// reported with a NOTICE saying why.
#[pg_extern(security_definer, volatile, parallel_unsafe, name = "import_jwks")]
#[search_path(pg_catalog, pg_temp)]
pub fn import_jwks_for_issuer(
    jwks: Option<JsonbArgument>,
    issuer: default!(Option<&str>, "NULL"),
) -> i32 {
    let jwks = required(jwks, "jwks").value_or_raise("jwks");
    let issuer = checked_issuer(issuer);
    let entries = parse_jwks(&jwks).unwrap_or_else(|error| raise(Failure::UnusableKey(error)));
    let mut imported = 0;
    for entry in entries {
        match (&entry.kid, entry.outcome) {
            (Some(kid), Ok(_)) if is_signing_key(kid) => {
                pgrx::notice!(
                    "skipped key #{} (kid {:?}): a signing key of this database has that kid",
                    entry.index,
                    kid.chars().take(64).collect::<String>()
                );
            }
            (Some(kid), Ok((alg, stored))) => {
                store_key(kid, alg, &stored, issuer);
                imported += 1;
            }
            (kid, Err(why)) => {
                let which = match kid {
                    Some(kid) => format!("kid {:?}", kid.chars().take(64).collect::<String>()),
                    None => "without kid".to_string(),
                };
                pgrx::notice!("skipped key #{} ({which}): {why}", entry.index);
            }
            (None, Ok(_)) => unreachable!("a key without kid is never accepted"),
        }
    }
    imported
}

/// `auth.retire_key(kid)`: retires a key — tokens signed with it are rejected from the next
/// statement on; a signing key is revoked with it (it neither signs nor verifies). False when
/// no active key has that kid. Runs as its caller (an admin), so the audit trail names them.
#[pg_extern(volatile, parallel_unsafe)]
fn retire_key(kid: Option<&str>) -> bool {
    let kid = required(kid, "kid");
    let Some((_, owner)) = owner_spi::relation_and_owner("keys") else {
        raise(Failure::MissingTables {
            what: "auth.keys is",
        });
    };
    let (_, retired) = owner_spi::modify(
        owner,
        include_str!("../queries/key_retire.sql"),
        &[text_arg(kid)],
        |row| row.get::<String>(0),
    );
    let Some(Some(alg)) = retired.into_iter().next() else {
        return false;
    };
    let previous_state =
        owner_spi::relation_and_owner("signing_key_material").and_then(|(_, owner)| {
            owner_spi::modify(
                owner,
                include_str!("../queries/signing_key_revoke.sql"),
                &[text_arg(kid)],
                |row| row.get::<String>(0),
            )
            .1
            .into_iter()
            .next()
            .flatten()
        });
    audit::record(
        audit::event::KEY_REVOKED,
        serde_json::json!({
            "kid": kid,
            "alg": alg,
            "state": "revoked",
            "previous_state": previous_state.unwrap_or_else(|| "verification key".into()),
        }),
    );
    true
}
