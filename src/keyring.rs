//! The per-backend keyring cache.
//!
//! `auth.keys` is read once and kept as a ready [`Keyring`] (parsed keys, built verifiers),
//! so a verification costs no query. It is reloaded whenever `auth.keys` changes (see
//! `cache.rs`): a committed change is in force from the next statement in every
//! backend, and a rolled-back one never.

use pg_session_auth_core::{Algorithm, Keyring, StoredKey};

use crate::cache::{self, GenerationCache, Source};
use crate::pg::owner_spi;

thread_local! {
    static KEYRING: GenerationCache<Keyring> = const { GenerationCache::new(Source::Keyring) };
}

/// Processes queued invalidations, then runs `f` with a current keyring.
pub fn with_keyring<R>(f: impl FnOnce(&Keyring) -> R) -> R {
    KEYRING.with(|keyring| keyring.with(load_keyring, |keyring| f(keyring)))
}

/// Reads `auth.keys` into a keyring. A row that no longer parses (written by hand) is left
/// out with a WARNING, so tokens for it fail as "unknown key" rather than being trusted.
fn load_keyring() -> Keyring {
    let mut keyring = Keyring::new();
    let Some((relid, owner)) = owner_spi::relation_and_owner("keys") else {
        return keyring;
    };
    cache::watch(relid, Source::Keyring);
    let rows = owner_spi::select(
        Some(owner),
        include_str!("queries/keys_load.sql"),
        &[],
        |row| {
            (
                row.get::<String>(0),
                row.get::<String>(1),
                row.get::<Vec<u8>>(2),
                row.get::<String>(3),
                row.get::<bool>(4),
                row.get::<String>(5),
            )
        },
    );
    for (kid, alg, secret, public_jwk, retired, issuer) in rows {
        let (Some(kid), Some(alg), Some(retired)) = (kid, alg, retired) else {
            continue;
        };
        let stored = match (secret, public_jwk) {
            (Some(secret), None) => Some(StoredKey::Secret(secret)),
            (None, Some(jwk)) => match serde_json::from_str(&jwk) {
                Ok(serde_json::Value::Object(object)) => Some(StoredKey::PublicJwk(object)),
                _ => None,
            },
            _ => None,
        };
        let outcome = match (Algorithm::from_name(&alg), stored) {
            (Some(alg), Some(stored)) => keyring
                .insert_for_issuer(&kid, alg, &stored, retired, issuer.as_deref())
                .map_err(|e| e.to_string()),
            _ => Err("the row's algorithm or key material is unreadable".to_string()),
        };
        if let Err(why) = outcome {
            pgrx::warning!("pg_session_auth: key {kid:?} in auth.keys is ignored: {why}");
        }
    }
    keyring
}
