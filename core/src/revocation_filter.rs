//! A Bloom filter over revocation keys: "certainly not revoked" in a few memory reads.
//!
//! Each stored revocation (a session id, a user id, a `jti`) sets a few bits; a token none of
//! whose keys has all its bits set is certainly not revoked, and only the rest need an exact
//! lookup. The filter never answers "revoked": false positives cost a lookup, false negatives
//! cannot happen as long as every stored key was inserted.
//!
//! The words are atomics so that one filter can live in memory shared by many processes:
//! inserts are `fetch_or`s that never lose a concurrent insert, probes are plain loads. How
//! inserts and probes are ordered against the filter being cleared and rebuilt is the
//! business of its [`slot`]: a state machine with a sequence counter per filter.
//!
//! Layout: a blocked Bloom filter. A key's bits all fall into one 512-bit block (one cache
//! line), chosen by one half of a keyed 128-bit SipHash-1-3; the other half picks
//! [`BITS_PER_KEY`] bits inside it. One probe is then one cache miss.

use std::sync::atomic::{AtomicU64, Ordering};

use siphasher::sip128::{Hasher128, SipHasher13};

pub mod slot;

/// 64-bit words per block: 512 bits, one cache line.
pub const WORDS_PER_BLOCK: usize = 8;
/// Bits set per key, each picked by 9 bits of the hash's second half (7 × 9 ≤ 64). In one
/// cache line more bits cost nothing measurable and lower the false positives (at 15 filter
/// bits per key: 0.13% with 7, 0.35% with 4).
pub const BITS_PER_KEY: u32 = 7;
/// Filter bits per key at [`RevocationFilter::capacity`]: about 0.4% false positives.
pub const FILTER_BITS_PER_KEY: u64 = 12;

/// A key under which a revocation is stored, as the revocation tables hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKey<'a> {
    /// `revoked_sessions.session_id`.
    Session(&'a [u8; 16]),
    /// `revoked_users.user_id` (the canonical user id).
    User(&'a str),
    /// `revoked_tokens.jti`.
    Token(&'a str),
}

impl FilterKey<'_> {
    fn hash(&self, seed: [u64; 2]) -> (u64, u64) {
        let mut hasher = SipHasher13::new_with_keys(seed[0], seed[1]);
        // The kind tag keeps equal strings of different kinds apart.
        let (tag, bytes): (u8, &[u8]) = match self {
            FilterKey::Session(id) => (b's', &id[..]),
            FilterKey::User(user) => (b'u', user.as_bytes()),
            FilterKey::Token(jti) => (b't', jti.as_bytes()),
        };
        std::hash::Hasher::write_u8(&mut hasher, tag);
        std::hash::Hasher::write(&mut hasher, bytes);
        hasher.finish128().as_u64()
    }
}

/// A Bloom filter over `words`, which it does not own.
pub struct RevocationFilter<'w> {
    words: &'w [AtomicU64],
    seed: [u64; 2],
}

impl<'w> RevocationFilter<'w> {
    /// A filter over `words` (a non-zero multiple of [`WORDS_PER_BLOCK`]), hashing with
    /// `seed`. Everyone who inserts into or probes the same words must use the same seed.
    pub fn new(words: &'w [AtomicU64], seed: [u64; 2]) -> Self {
        assert!(
            !words.is_empty() && words.len().is_multiple_of(WORDS_PER_BLOCK),
            "a revocation filter is made of whole blocks"
        );
        RevocationFilter { words, seed }
    }

    /// The words and bits `key` maps to.
    fn positions(&self, key: FilterKey<'_>) -> impl Iterator<Item = (usize, u64)> {
        let (block_hash, bit_hash) = key.hash(self.seed);
        let blocks = (self.words.len() / WORDS_PER_BLOCK) as u64;
        // Lemire's multiply-shift: an unbiased enough block index without a division.
        let block = ((u128::from(block_hash) * u128::from(blocks)) >> 64) as usize;
        let first_word = block * WORDS_PER_BLOCK;
        (0..BITS_PER_KEY).map(move |i| {
            let bit = (bit_hash >> (i * 9)) & 511;
            (first_word + (bit >> 6) as usize, 1u64 << (bit & 63))
        })
    }

    pub fn insert(&self, key: FilterKey<'_>) {
        for (word, mask) in self.positions(key) {
            self.words[word].fetch_or(mask, Ordering::Relaxed);
        }
    }

    /// False when `key` was certainly never inserted (since the last [`Self::clear`]).
    pub fn may_contain(&self, key: FilterKey<'_>) -> bool {
        self.positions(key)
            .all(|(word, mask)| self.words[word].load(Ordering::Relaxed) & mask != 0)
    }

    pub fn clear(&self) {
        for word in self.words {
            word.store(0, Ordering::Relaxed);
        }
    }

    /// How many keys the filter holds at about 0.4% false positives.
    pub fn capacity(&self) -> u64 {
        self.words.len() as u64 * 64 / FILTER_BITS_PER_KEY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn every_inserted_key_is_found() {
        let words = words(1024);
        let filter = RevocationFilter::new(&words, [1, 2]);
        let sessions: Vec<[u8; 16]> = (0u32..5000)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&i.to_le_bytes());
                id
            })
            .collect();
        let names: Vec<String> = (0..5000).map(|i| format!("user-{i}")).collect();
        for (id, name) in sessions.iter().zip(&names) {
            filter.insert(FilterKey::Session(id));
            filter.insert(FilterKey::User(name));
            filter.insert(FilterKey::Token(name));
        }
        for (id, name) in sessions.iter().zip(&names) {
            assert!(filter.may_contain(FilterKey::Session(id)));
            assert!(filter.may_contain(FilterKey::User(name)));
            assert!(filter.may_contain(FilterKey::Token(name)));
        }
    }

    #[test]
    fn an_empty_filter_contains_nothing() {
        let words = words(8);
        let filter = RevocationFilter::new(&words, [0, 0]);
        assert!(!filter.may_contain(FilterKey::User("")));
        assert!(!filter.may_contain(FilterKey::Session(&[0; 16])));
    }

    #[test]
    fn kinds_are_kept_apart_and_clear_empties() {
        let words = words(64);
        let filter = RevocationFilter::new(&words, [7, 9]);
        filter.insert(FilterKey::User("same"));
        assert!(filter.may_contain(FilterKey::User("same")));
        assert!(!filter.may_contain(FilterKey::Token("same")));
        filter.clear();
        assert!(!filter.may_contain(FilterKey::User("same")));
    }

    #[test]
    fn false_positives_at_capacity_stay_under_one_percent() {
        let words = words(16 * 1024);
        let filter = RevocationFilter::new(&words, [3, 4]);
        let capacity = filter.capacity();
        for i in 0..capacity {
            filter.insert(FilterKey::Token(&format!("revoked-{i}")));
        }
        let trials = 200_000;
        let hits = (0..trials)
            .filter(|i| filter.may_contain(FilterKey::Token(&format!("other-{i}"))))
            .count();
        let rate = hits as f64 / trials as f64;
        assert!(rate < 0.01, "false-positive rate {rate}");
        assert!(rate > 0.0005, "suspiciously few false positives: {rate}");
    }

    #[test]
    fn seeds_change_the_positions() {
        let (a, b) = (words(1024), words(1024));
        let fa = RevocationFilter::new(&a, [1, 1]);
        let fb = RevocationFilter::new(&b, [2, 2]);
        fa.insert(FilterKey::User("x"));
        fb.insert(FilterKey::User("x"));
        let set =
            |w: &[AtomicU64]| -> Vec<u64> { w.iter().map(|x| x.load(Ordering::Relaxed)).collect() };
        assert_ne!(set(&a), set(&b));
    }

    #[test]
    #[should_panic(expected = "whole blocks")]
    fn partial_blocks_are_refused() {
        let words = words(12);
        RevocationFilter::new(&words, [0, 0]);
    }
}
