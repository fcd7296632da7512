//! Signing keys and signing. Executable by the extension's owner, superusers and
//! `session_auth_admin` (keys), and `session_auth_issuer` (signing) — see `sql/finalize.sql`;
//! the private material is read and written as the tables' owner (`pg::owner_spi`).

use pg_session_auth_core::signing::SigningKey;
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;

use super::keys::algorithm;
use serde_json::json;

use crate::audit;
use crate::errors::{invalid_argument, raise, required, Failure};
use crate::jsonb::JsonbArgument;
use crate::pg::clock;
use crate::sessions::access_token;
use crate::signing_keys;

/// An interval as microseconds (a month as 30 days, a day as 24 hours, as `extract(epoch)`).
pub fn interval_micros(interval: &Interval) -> i64 {
    let micros = interval.as_micros();
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// `auth.generate_key(alg)`: a new signing key from the operating system's CSPRNG; in use
/// when no key is, else standby. Returns its kid.
#[pg_extern(volatile, parallel_unsafe)]
fn generate_key(alg: default!(Option<&str>, "'ES256'")) -> String {
    let alg = algorithm(required(alg, "alg"));
    let key = SigningKey::generate(alg).unwrap_or_else(|error| raise(Failure::UnusableKey(error)));
    let (kid, state) = signing_keys::store(None, &key);
    audit::record(
        audit::event::KEY_GENERATED,
        json!({ "kid": kid, "alg": alg.name(), "state": state }),
    );
    kid
}

/// `auth.import_signing_key(private_key, alg, kid)`: an existing private key (PEM or private
/// JWK; the secret for HMAC), for a migration. Returns its kid.
#[pg_extern(volatile, parallel_unsafe)]
fn import_signing_key(
    private_key: Option<&str>,
    alg: Option<&str>,
    kid: default!(Option<&str>, "NULL"),
) -> String {
    let alg = algorithm(required(alg, "alg"));
    let key = SigningKey::import(alg, required(private_key, "private_key"))
        .unwrap_or_else(|error| raise(Failure::UnusableKey(error)));
    let (kid, state) = signing_keys::store(kid, &key);
    audit::record(
        audit::event::KEY_IMPORTED,
        json!({ "kid": kid, "alg": alg.name(), "state": state }),
    );
    kid
}

/// `auth.rotate_signing_key()`: puts the newest standby key in use; returns its kid.
#[pg_extern(volatile, parallel_unsafe)]
fn rotate_signing_key() -> String {
    let (kid, alg) = signing_keys::rotate();
    audit::record(
        audit::event::KEY_ROTATED,
        json!({ "kid": kid, "alg": alg, "state": "in_use" }),
    );
    kid
}

/// `auth.signing_keys()`: every signing key with its state; never material.
#[pg_extern(stable, parallel_restricted)]
fn signing_keys() -> TableIterator<
    'static,
    (
        name!(kid, String),
        name!(alg, String),
        name!(state, String),
        name!(created_at, TimestampWithTimeZone),
    ),
> {
    TableIterator::new(signing_keys::list())
}

/// `auth.sign(claims, expires_in)`: a token of `claims` signed with the key in use, with
/// `iat`, `exp`, `jti` and (when configured) `iss` set.
#[pg_extern(volatile, parallel_unsafe)]
fn sign(
    claims: Option<JsonbArgument>,
    expires_in: default!(Option<Interval>, "'1 hour'"),
) -> String {
    let claims = required(claims, "claims").object_or_raise("claims");
    let expires_in = interval_micros(&required(expires_in, "expires_in"));
    if expires_in <= 0 {
        raise(invalid_argument("expires_in must be positive", None));
    }
    let now = clock::now_unix_micros();
    access_token::sign(claims, now, now.saturating_add(expires_in))
}
