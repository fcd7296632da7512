//! Keys this database signs with: generating, importing, rotating, and the key in use.
//!
//! A signing key is two rows: its verification half in `auth.keys` (a public JWK, or the
//! HMAC secret) — so the keyring, `auth.jwks()` and retirement work for it as for any key —
//! and its private half in `auth.signing_key_material`, which only the extension's owner can
//! read. The key in use is kept per backend, ready to sign, and dropped when either table
//! changes (see `cache.rs`).

use std::rc::Rc;

use pg_session_auth_core::signing::{random_bytes, SigningKey};
use pg_session_auth_core::{check_kid, Algorithm};
use pgrx::{pg_sys, IntoDatum};
use serde_json::{Map, Value};

use crate::cache::{self, GenerationCache, Source};
use crate::errors::{raise, Failure};
use crate::pg::jsonb::object_to_jsonb;
use crate::pg::owner_spi::{self, text_arg};

/// The key in use, ready to sign.
pub struct KeyInUse {
    pub kid: String,
    pub key: SigningKey,
}

thread_local! {
    static IN_USE: GenerationCache<Option<Rc<KeyInUse>>> =
        const { GenerationCache::new(Source::SigningKeys) };
}

/// The tables' owner; `55000` when the extension's tables are gone.
fn material_owner() -> (pg_sys::Oid, pg_sys::Oid) {
    owner_spi::relation_and_owner("signing_key_material").unwrap_or_else(|| {
        raise(Failure::NotUpdated {
            what: "keys can be generated",
        })
    })
}

/// The key in use; `55000` when no key is in use.
pub fn key_in_use() -> Rc<KeyInUse> {
    IN_USE
        .with(|cache| cache.with(load_key_in_use, |key| key.clone()))
        .unwrap_or_else(|| raise(Failure::NoSigningKey))
}

fn load_key_in_use() -> Option<Rc<KeyInUse>> {
    let (relid, owner) = owner_spi::relation_and_owner("signing_key_material")?;
    cache::watch(relid, Source::SigningKeys);
    if let Some((keys, _)) = owner_spi::relation_and_owner("keys") {
        cache::watch(keys, Source::SigningKeys);
    }
    let rows = owner_spi::select(
        Some(owner),
        include_str!("queries/signing_key_in_use.sql"),
        &[],
        |row| {
            (
                row.get::<String>(0),
                row.get::<String>(1),
                row.get::<Vec<u8>>(2),
            )
        },
    );
    let (Some(kid), Some(alg), Some(material)) = rows.into_iter().next()? else {
        return None;
    };
    let alg = Algorithm::from_name(&alg)?;
    match SigningKey::from_stored(alg, &material) {
        Ok(key) => Some(Rc::new(KeyInUse { kid, key })),
        Err(_) => {
            // Never the material itself in a message.
            pgrx::warning!(
                "pg_session_auth: the signing key {kid:?} is unreadable and signs nothing"
            );
            None
        }
    }
}

/// A new key id: 128 random bits, base64url.
fn new_kid() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<16>())
}

/// Stores `key` under `kid` (a new kid, or `22023` when taken); returns its state.
pub fn store(kid: Option<&str>, key: &SigningKey) -> (String, String) {
    let kid = match kid {
        Some(kid) => {
            check_kid(kid).unwrap_or_else(|error| raise(Failure::UnusableKey(error)));
            kid.to_owned()
        }
        None => new_kid(),
    };
    let (_, owner) = material_owner();
    let (secret, public_jwk): (Option<Vec<u8>>, Option<Map<String, Value>>) = match key.public_jwk()
    {
        Some(jwk) => (None, Some(jwk)),
        None => (Some(key.stored().to_vec()), None),
    };
    owner_spi::execute(owner, include_str!("queries/signing_key_lock.sql"), &[]);
    let taken = owner_spi::select(
        Some(owner),
        include_str!("queries/key_exists.sql"),
        &[text_arg(&kid)],
        |row| row.get::<bool>(0),
    );
    if taken.first() == Some(&Some(true)) {
        raise(crate::errors::invalid_argument(
            format!("a key with kid {kid:?} exists already"),
            Some("Choose another kid, or retire and remove the old key first.".into()),
        ));
    }
    let (_, states) = owner_spi::modify(
        owner,
        include_str!("queries/signing_key_store.sql"),
        &[
            text_arg(&kid),
            text_arg(key.alg().name()),
            (pg_sys::BYTEAOID, secret.into_datum()),
            (
                pg_sys::JSONBOID,
                public_jwk.map(|jwk| object_to_jsonb(&jwk)),
            ),
            (pg_sys::BYTEAOID, key.stored().to_vec().into_datum()),
        ],
        |row| row.get::<String>(0),
    );
    let state = states.into_iter().next().flatten().unwrap_or_default();
    (kid, state)
}

/// Puts the newest standby key in use; returns its kid and algorithm.
pub fn rotate() -> (String, String) {
    let (_, owner) = material_owner();
    owner_spi::execute(owner, include_str!("queries/signing_key_lock.sql"), &[]);
    let (_, standby) = owner_spi::modify(
        owner,
        include_str!("queries/signing_key_demote.sql"),
        &[],
        |row| row.get::<bool>(0),
    );
    if standby.first() != Some(&Some(true)) {
        raise(Failure::NoStandbyKey);
    }
    let (_, kids) = owner_spi::modify(
        owner,
        include_str!("queries/signing_key_rotate.sql"),
        &[],
        |row| Some((row.get::<String>(0)?, row.get::<String>(1)?)),
    );
    kids.into_iter()
        .next()
        .flatten()
        .unwrap_or_else(|| raise(Failure::NoStandbyKey))
}

/// Every signing key: kid, algorithm, state, created at.
pub fn list() -> Vec<(String, String, String, pgrx::datum::TimestampWithTimeZone)> {
    let (_, owner) = material_owner();
    owner_spi::select(
        Some(owner),
        include_str!("queries/signing_keys_list.sql"),
        &[],
        |row| {
            (
                row.get::<String>(0).unwrap_or_default(),
                row.get::<String>(1).unwrap_or_default(),
                row.get::<String>(2).unwrap_or_default(),
                row.get::<pgrx::datum::TimestampWithTimeZone>(3)
                    .expect("created_at is NOT NULL"),
            )
        },
    )
}
