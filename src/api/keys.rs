//! Keyring management. These functions are SECURITY DEFINER (the table is closed to
//! everyone else) and executable only by the extension owner, superusers and members of
//! `session_auth_admin` (see `sql/finalize.sql`).

use pg_session_auth_core::{check_kid, parse_jwks, parse_key, Algorithm, StoredKey, VerifyingKey};
use pgrx::prelude::*;
use pgrx::{IntoDatum, JsonB};

use crate::errors::{raise_invalid_parameter, raise_key_error};
use crate::owner_spi::{self, text_arg};

fn algorithm(name: &str) -> Algorithm {
    Algorithm::from_name(name).unwrap_or_else(|| {
        let supported: Vec<&str> = Algorithm::ALL.iter().map(|alg| alg.name()).collect();
        raise_invalid_parameter(
            format!("unsupported algorithm {name:?}"),
            Some(format!("Supported algorithms: {}.", supported.join(", "))),
        )
    })
}

/// Inserts or replaces a key (a replaced key is active again).
fn store_key(kid: &str, alg: Algorithm, stored: &StoredKey) {
    if let Err(error) = VerifyingKey::new(alg, stored) {
        raise_key_error(&error);
    }
    let (secret, public_jwk) = match stored {
        StoredKey::Secret(secret) => (Some(secret.clone()), None),
        StoredKey::PublicJwk(jwk) => (None, Some(JsonB(serde_json::Value::Object(jwk.clone())))),
    };
    let Some((_, owner)) = owner_spi::relation_and_owner("keys") else {
        pgrx::error!("pg_session_auth: auth.keys is missing");
    };
    // Through owner_spi, not pgrx's Spi: that one asks for a transaction id first, which on a
    // hot standby is an internal error instead of PostgreSQL's read-only error (25006).
    owner_spi::modify(
        owner,
        "insert into auth.keys as k (kid, alg, secret, public_jwk) values ($1, $2, $3, $4) \
         on conflict (kid) do update set alg = excluded.alg, secret = excluded.secret, \
         public_jwk = excluded.public_jwk, created_at = pg_catalog.now(), retired_at = null",
        &[
            text_arg(kid),
            text_arg(alg.name()),
            (pg_sys::BYTEAOID, secret.into_datum()),
            (pg_sys::JSONBOID, public_jwk.into_datum()),
        ],
    );
}

/// `auth.add_key(kid, alg, key)`: adds or replaces a verification key. `key` is the HMAC
/// secret, a PEM public key, or a JWK as JSON text; it must fit `alg`.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn add_key(kid: &str, alg: &str, key: &str) {
    if let Err(error) = check_kid(kid) {
        raise_key_error(&error);
    }
    let alg = algorithm(alg);
    match parse_key(alg, key) {
        Ok(stored) => store_key(kid, alg, &stored),
        Err(error) => raise_key_error(&error),
    }
}

/// `auth.import_jwks(jwks)`: adds or replaces every usable public key of a JWKS document and
/// returns how many; each key it skips is reported with a NOTICE saying why.
#[pg_extern(security_definer, volatile, parallel_unsafe, strict)]
#[search_path(pg_catalog, pg_temp)]
fn import_jwks(jwks: JsonB) -> i32 {
    let entries = parse_jwks(&jwks.0).unwrap_or_else(|error| raise_key_error(&error));
    let mut imported = 0;
    for entry in entries {
        match (&entry.kid, entry.outcome) {
            (Some(kid), Ok((alg, stored))) => {
                store_key(kid, alg, &stored);
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
