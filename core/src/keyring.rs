use std::collections::HashMap;

use crate::algorithm::Algorithm;
use crate::error::{KeyError, Rejection, VerifyError};
use crate::key::{StoredKey, VerifyingKey};

/// One key of the keyring.
#[derive(Debug)]
pub struct KeyEntry {
    pub kid: String,
    pub retired: bool,
    pub key: VerifyingKey,
    /// The issuer this key signs for: a token it verifies must carry exactly this `iss`.
    pub issuer: Option<String>,
    /// Identifies the key material (and issuer) under this kid, so that an identity bound
    /// with a key can tell when the kid was given other material.
    pub fingerprint: u64,
}

/// Which key verified a token, as an identity bound from it remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub kid: String,
    pub fingerprint: u64,
}

fn fingerprint(alg: Algorithm, stored: &StoredKey, issuer: Option<&str>) -> u64 {
    use std::hash::Hasher;
    let mut hasher =
        siphasher::sip::SipHasher13::new_with_keys(0x7067_5f73_6573_7369, 0x6f6e_5f61_7574_6800);
    hasher.write(alg.name().as_bytes());
    hasher.write_u8(0);
    match stored {
        StoredKey::Secret(secret) => {
            hasher.write_u8(1);
            hasher.write(secret);
        }
        StoredKey::PublicJwk(jwk) => {
            hasher.write_u8(2);
            hasher.write(
                serde_json::Value::Object(jwk.clone())
                    .to_string()
                    .as_bytes(),
            );
        }
    }
    match issuer {
        Some(issuer) => {
            hasher.write_u8(1);
            hasher.write(issuer.as_bytes());
        }
        None => hasher.write_u8(0),
    }
    hasher.finish()
}

/// The keys a verification may use, by `kid`.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: HashMap<String, KeyEntry>,
    active: usize,
}

impl Keyring {
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Adds (or replaces) a key that signs for any issuer, building its verifier.
    pub fn insert(
        &mut self,
        kid: &str,
        alg: Algorithm,
        stored: &StoredKey,
        retired: bool,
    ) -> Result<(), KeyError> {
        self.insert_for_issuer(kid, alg, stored, retired, None)
    }

    /// Adds (or replaces) a key; with `issuer`, tokens it verifies must carry that `iss`.
    pub fn insert_for_issuer(
        &mut self,
        kid: &str,
        alg: Algorithm,
        stored: &StoredKey,
        retired: bool,
        issuer: Option<&str>,
    ) -> Result<(), KeyError> {
        let key = VerifyingKey::new(alg, stored)?;
        if let Some(old) = self.keys.insert(
            kid.to_owned(),
            KeyEntry {
                kid: kid.to_owned(),
                retired,
                key,
                issuer: issuer.map(str::to_owned),
                fingerprint: fingerprint(alg, stored, issuer),
            },
        ) {
            self.active -= usize::from(!old.retired);
        }
        self.active += usize::from(!retired);
        Ok(())
    }

    pub fn active_keys(&self) -> usize {
        self.active
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether the key that verified a bound identity still may: present under its kid with
    /// the same material, and not retired. Otherwise the rejection the token would get now.
    pub fn still_trusts(&self, key: &KeyRef) -> Result<(), Rejection> {
        match self.keys.get(&key.kid) {
            Some(entry) if entry.fingerprint != key.fingerprint => Err(Rejection::UnknownKey(
                "The key that verified the token has been replaced.".to_owned(),
            )),
            Some(entry) if entry.retired => Err(Rejection::RetiredKey(key.kid.clone())),
            Some(_) => Ok(()),
            None => Err(Rejection::UnknownKey(
                "The key that verified the token has been removed.".to_owned(),
            )),
        }
    }

    /// The key for a token: by exact `kid`, or, for a token without `kid`, the only active key.
    pub fn select(&self, kid: Option<&str>) -> Result<&KeyEntry, VerifyError> {
        if let Some(kid) = kid {
            return match self.keys.get(kid) {
                Some(entry) if entry.retired => Err(Rejection::RetiredKey(kid.to_owned()).into()),
                Some(entry) => Ok(entry),
                None if self.active == 0 => Err(VerifyError::NoKeyConfigured),
                None => Err(Rejection::UnknownKey(format!(
                    "No active key has the token's kid \"{}\".",
                    kid.chars().take(64).collect::<String>().escape_debug()
                ))
                .into()),
            };
        }
        match self.active {
            0 => Err(VerifyError::NoKeyConfigured),
            1 => Ok(self.keys.values().find(|entry| !entry.retired).expect("one active key")),
            n => Err(Rejection::UnknownKey(format!(
                "The token has no kid and {n} keys are active; a token without kid is accepted only when exactly one is."
            ))
            .into()),
        }
    }
}
