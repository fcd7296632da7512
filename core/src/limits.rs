//! Every size limit the extension enforces, defined once. The table `CHECK`s of
//! `sql/bootstrap.sql` state the same numbers (SQL cannot import them); an in-server test
//! (`table_checks_match_the_limits`) compares the installed constraints with these constants
//! and with [`Algorithm::ALL`](crate::Algorithm::ALL).

/// Longest `kid`, in bytes (`auth.keys.kid`).
pub const MAX_KID_BYTES: usize = 256;

/// Longest identifier kept in a table, in bytes: a token's `iss`, `sub` and `jti` (what
/// revocations are keyed by — a token that could not be revoked is not accepted), a revoked
/// user id, a key's issuer.
pub const MAX_ID_BYTES: usize = 1024;

/// At most this many keys are read from one JWKS document.
pub const MAX_JWKS_KEYS: usize = 100;
