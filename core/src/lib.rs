//! The server-independent core of pg_session_auth.
//!
//! Everything that decides whether a token is trusted lives here as plain Rust: parsing a
//! compact JWS, turning key text (PEM or JWK) into a verifier, picking the key for a token,
//! checking the signature with AWS-LC (`signature`), and applying the claim rules at a
//! clock value the caller passes in. The PostgreSQL extension is a thin layer over this crate:
//! it supplies the keyring, the settings and the clock, and maps [`VerifyError`] to SQLSTATEs.

#![forbid(unsafe_code)]

pub mod activity;
mod algorithm;
mod claims;
mod error;
pub mod identity;
mod jwk;
mod key;
mod keyring;
mod limits;
pub mod refresh_token;
pub mod revocation;
pub mod revocation_filter;
mod signature;
pub mod signing;
mod token;
mod verify;

pub use algorithm::{Algorithm, KeyKind};
pub use claims::{check_claims, ClaimRules};
pub use error::{KeyError, Rejection, VerifyError};
pub use jwk::{check_kid, parse_jwks, JwksEntry};
pub use key::{parse_key, StoredKey, VerifyingKey};
pub use keyring::{KeyEntry, KeyRef, Keyring};
pub use limits::{MAX_ID_BYTES, MAX_JWKS_KEYS, MAX_KID_BYTES};
pub use token::{parse_compact, CompactJws, Header};
pub use verify::{verify, verify_reporting, verify_with_key, Policy, RefusedToken};

/// Claims of a verified token: the payload's JSON object (a token that names a claim twice
/// is refused as malformed).
pub type Claims = serde_json::Map<String, serde_json::Value>;
