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

    /// Adds (or replaces) a key, building its verifier.
    pub fn insert(
        &mut self,
        kid: &str,
        alg: Algorithm,
        stored: &StoredKey,
        retired: bool,
    ) -> Result<(), KeyError> {
        let key = VerifyingKey::new(alg, stored)?;
        if let Some(old) = self.keys.insert(
            kid.to_owned(),
            KeyEntry {
                kid: kid.to_owned(),
                retired,
                key,
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
