//! Refresh tokens the database can produce again but a dump of it cannot, and the rules for
//! presenting one.
//!
//! A refresh token names a session and a position in it (its counter) and proves both with a
//! MAC under a server secret that lives in no table:
//!
//! ```text
//! token = base64url( 0x01 | session id (16 bytes) | counter (8, big-endian) | tag (16) )
//! tag   = HMAC-SHA256(secret, "pg_session_auth refresh token v1" | session id | counter)[..16]
//! ```
//!
//! So the database stores counters, never a token or anything a token can be made from; the
//! session's current token is re-derived whenever it must be handed back (two tabs refreshing
//! at once); and a server with the same secret still accepts the tokens after a restore. The
//! tag is 128 bits of a keyed MAC (the secret has at least 256 bits from the CSPRNG), so a
//! token cannot be guessed or forged, and it is compared in constant time.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const VERSION: u8 = 1;
const CONTEXT: &[u8] = b"pg_session_auth refresh token v1";
const TAG_BYTES: usize = 16;
const TOKEN_BYTES: usize = 1 + 16 + 8 + TAG_BYTES;

/// Least length of the server secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The server secret refresh tokens are derived from.
pub struct RefreshSecret(hmac::Key);

impl RefreshSecret {
    /// `None` when the secret is shorter than [`MIN_SECRET_BYTES`].
    pub fn new(secret: &[u8]) -> Option<RefreshSecret> {
        (secret.len() >= MIN_SECRET_BYTES)
            .then(|| RefreshSecret(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    fn tag(&self, session: &[u8; 16], counter: u64) -> [u8; TAG_BYTES] {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(CONTEXT);
        context.update(session);
        context.update(&counter.to_be_bytes());
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&context.sign().as_ref()[..TAG_BYTES]);
        tag
    }

    /// The refresh token of `session` at `counter`.
    pub fn token(&self, session: &[u8; 16], counter: u64) -> String {
        let mut bytes = Vec::with_capacity(TOKEN_BYTES);
        bytes.push(VERSION);
        bytes.extend_from_slice(session);
        bytes.extend_from_slice(&counter.to_be_bytes());
        bytes.extend_from_slice(&self.tag(session, counter));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The session and counter a token names, when it is one this secret made; `None` for
    /// anything else (malformed, another version, a forged or altered tag).
    pub fn open(&self, token: &str) -> Option<PresentedToken> {
        if token.len() > 2 * TOKEN_BYTES {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() != TOKEN_BYTES || bytes[0] != VERSION {
            return None;
        }
        let session: [u8; 16] = bytes[1..17].try_into().ok()?;
        let counter = u64::from_be_bytes(bytes[17..25].try_into().ok()?);
        verify_slices_are_equal(&bytes[25..], &self.tag(&session, counter)).ok()?;
        Some(PresentedToken { session, counter })
    }
}

/// What a valid refresh token names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresentedToken {
    pub session: [u8; 16],
    pub counter: u64,
}

/// A session's refresh state, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshState<'a> {
    /// The counter of the session's current refresh token.
    pub counter: u64,
    /// Tokens below this counter were issued before the session's last step-up
    /// (`update_session_aal`): they can no longer obtain a token at the higher level.
    pub step_up_floor: u64,
    /// When the most recent superseded counters were superseded (µs since the Unix epoch),
    /// oldest first: the last entry is `counter - 1`'s.
    pub superseded_at: &'a [i64],
}

/// What presenting a token does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshDecision {
    /// The current token: rotate to a new one.
    Rotate,
    /// A superseded token presented again in good faith (the immediately previous one, or
    /// one superseded within the reuse interval): hand back the session's current token.
    HandBackCurrent,
    /// Superseded by a step-up within the reuse interval: refused, the session kept.
    SupersededByStepUp,
    /// A token the session never issued (e.g. after a restore of an older dump).
    NeverIssued,
    /// A superseded token presented outside the reuse interval: the token was stolen (or the
    /// session's current one was); the whole session must end.
    Theft,
}

impl RefreshState<'_> {
    /// When `counter` was superseded, if still remembered.
    fn superseded_at(&self, counter: u64) -> Option<i64> {
        let back = usize::try_from(self.counter.checked_sub(counter)?).ok()?;
        let index = self.superseded_at.len().checked_sub(back)?;
        self.superseded_at.get(index).copied()
    }

    /// The rule for presenting `presented` at `now` (µs), with the reuse interval in µs.
    /// Monotone: once a token is theft it stays theft, so the verdict may be reached
    /// without a lock and acted on independently of the caller's transaction.
    pub fn decide(&self, presented: u64, now: i64, reuse_interval: i64) -> RefreshDecision {
        use RefreshDecision::*;
        if presented > self.counter {
            return NeverIssued;
        }
        if presented == self.counter {
            return Rotate;
        }
        let within_interval = self
            .superseded_at(presented)
            .is_some_and(|at| now.saturating_sub(at) <= reuse_interval);
        if presented < self.step_up_floor {
            return if within_interval {
                SupersededByStepUp
            } else {
                Theft
            };
        }
        if presented + 1 == self.counter || within_interval {
            HandBackCurrent
        } else {
            Theft
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const SESSION: [u8; 16] = [7; 16];

    #[test]
    fn tokens_round_trip_and_resist_tampering() {
        let secret = RefreshSecret::new(SECRET).unwrap();
        let token = secret.token(&SESSION, 41);
        assert_eq!(
            secret.open(&token),
            Some(PresentedToken {
                session: SESSION,
                counter: 41
            })
        );
        assert_eq!(token, secret.token(&SESSION, 41), "deterministic");
        assert_ne!(token, secret.token(&SESSION, 42));
        let other = RefreshSecret::new(b"another secret of thirty-two bytes!!").unwrap();
        assert_eq!(other.open(&token), None, "another secret");
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            assert_eq!(
                secret.open(&URL_SAFE_NO_PAD.encode(&bytes)),
                None,
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        for bad in [
            "",
            "x",
            &token[1..],
            &format!("{token}A"),
            &"A".repeat(10_000),
        ] {
            assert_eq!(secret.open(bad), None);
        }
        assert!(RefreshSecret::new(&SECRET[..31]).is_none());
    }

    #[test]
    fn decisions() {
        use RefreshDecision::*;
        let second = 1_000_000;
        let interval = 10 * second;
        // Counter 5; 2, 3 and 4 were superseded at 100 s, 200 s and 300 s.
        let state = RefreshState {
            counter: 5,
            step_up_floor: 0,
            superseded_at: &[100 * second, 200 * second, 300 * second],
        };
        let now = 305 * second;
        assert_eq!(state.decide(5, now, interval), Rotate);
        assert_eq!(state.decide(6, now, interval), NeverIssued);
        assert_eq!(state.decide(4, now, interval), HandBackCurrent);
        assert_eq!(state.decide(4, 1_000 * second, interval), HandBackCurrent);
        assert_eq!(state.decide(3, now, interval), Theft);
        assert_eq!(state.decide(3, 205 * second, interval), HandBackCurrent);
        assert_eq!(
            state.decide(1, now, interval),
            Theft,
            "older than remembered"
        );
        assert_eq!(state.decide(0, now, interval), Theft);
        // A step-up at 300 s moved the floor to 5: 4 may not hand back the higher level.
        let stepped = RefreshState {
            step_up_floor: 5,
            ..state.clone()
        };
        assert_eq!(stepped.decide(4, now, interval), SupersededByStepUp);
        assert_eq!(stepped.decide(4, 400 * second, interval), Theft);
        assert_eq!(stepped.decide(5, now, interval), Rotate);
    }

    #[test]
    fn theft_is_monotone() {
        // Whatever happens later (more rotations, time passing), a theft verdict stays.
        let second = 1_000_000;
        let history: Vec<i64> = (1..=21).map(|i| i * 100 * second).collect();
        for counter in 1..=20u64 {
            for presented in 0..counter {
                let remembered = &history[..counter as usize];
                let state = RefreshState {
                    counter,
                    step_up_floor: 0,
                    superseded_at: &remembered[remembered.len().saturating_sub(16)..],
                };
                for now in [counter as i64 * 100 * second, 10_000 * second] {
                    if state.decide(presented, now, 10 * second) != RefreshDecision::Theft {
                        continue;
                    }
                    let remembered_later = &history[..(counter + 1) as usize];
                    let later = RefreshState {
                        counter: counter + 1,
                        superseded_at: &remembered_later
                            [remembered_later.len().saturating_sub(16)..],
                        ..state.clone()
                    };
                    assert_eq!(
                        later.decide(presented, now + second, 10 * second),
                        RefreshDecision::Theft
                    );
                }
            }
        }
    }
}
