use thiserror::Error;

/// Why a token was rejected. Each variant has a stable short [`reason`](Rejection::reason)
/// that appears in the error message; [`detail`](Rejection::detail) may add specifics but
/// never key material and never the token itself.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Rejection {
    #[error("malformed")]
    Malformed(&'static str),
    #[error("too large")]
    TooLarge { size: usize, limit: usize },
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm(String),
    #[error("unknown key")]
    UnknownKey(String),
    #[error("retired key")]
    RetiredKey(String),
    #[error("algorithm mismatch")]
    AlgorithmMismatch { token: String, key: &'static str },
    #[error("forbidden header")]
    ForbiddenHeader(&'static str),
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("wrong issuer")]
    WrongIssuer,
    /// The token's key is bound to an issuer (`auth.add_key(..., issuer => ...)`) that the
    /// token's `iss` is not.
    #[error("wrong issuer")]
    KeyIssuerMismatch,
    #[error("wrong audience")]
    WrongAudience,
    #[error("missing claim")]
    MissingClaim(&'static str),
    #[error("invalid claim type")]
    InvalidClaimType(&'static str),
    #[error("role not allowed")]
    RoleNotAllowed(String),
    #[error("lifetime too long")]
    LifetimeTooLong { limit: i64 },
    #[error("revoked")]
    Revoked,
}

/// Attacker-chosen text quoted in a detail is cut short and escaped.
fn quoted(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut shown: String = text.chars().take(MAX_CHARS).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!("\"{}\"", shown.escape_debug())
}

impl Rejection {
    /// The stable reason, as written in the error message `invalid token: <reason>`.
    pub fn reason(&self) -> String {
        self.to_string()
    }

    pub fn detail(&self) -> String {
        match self {
            Rejection::Malformed(what) => (*what).to_string(),
            Rejection::TooLarge { size, limit } => {
                format!("The token is {size} bytes; pg_session_auth.max_token_bytes is {limit}.")
            }
            Rejection::UnsupportedAlgorithm(alg) => {
                format!("The token's header names the algorithm {}.", quoted(alg))
            }
            Rejection::UnknownKey(why) => why.clone(),
            Rejection::RetiredKey(kid) => format!("The key {} has been retired.", quoted(kid)),
            Rejection::AlgorithmMismatch { token, key } => format!(
                "The token's header says {} but its key is for {key}.",
                quoted(token)
            ),
            Rejection::ForbiddenHeader(name) => {
                format!("The token's header contains \"{name}\", which is never accepted.")
            }
            Rejection::BadSignature => "The signature does not match the token's contents.".into(),
            Rejection::Expired => "The token's exp claim is in the past.".into(),
            Rejection::NotYetValid => "The token's nbf claim is in the future.".into(),
            Rejection::IssuedInFuture => "The token's iat claim is in the future.".into(),
            Rejection::WrongIssuer => "The token's iss claim is not pg_session_auth.issuer.".into(),
            Rejection::KeyIssuerMismatch => {
                "The token's iss claim is not the issuer its key is bound to.".into()
            }
            Rejection::WrongAudience => {
                "The token's aud claim does not contain pg_session_auth.audience.".into()
            }
            Rejection::MissingClaim(name) => format!("The token has no \"{name}\" claim."),
            Rejection::InvalidClaimType(what) => (*what).to_string(),
            Rejection::LifetimeTooLong { limit } => format!(
                "The token's exp is more than pg_session_auth.max_token_lifetime ({limit} s) after its iat."
            ),
            Rejection::Revoked => "The token's session, user or token id has been revoked.".into(),
            Rejection::RoleNotAllowed(role) => format!(
                "The token asks for the role {}, which is not in pg_session_auth.allowed_roles or cannot be assumed.",
                quoted(role)
            ),
        }
    }

    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Rejection::TooLarge { .. } => {
                Some("Tokens are bounded in size before they are parsed.")
            }
            Rejection::Expired | Rejection::NotYetValid | Rejection::IssuedInFuture => Some(
                "Check the issuer's and the database server's clocks; pg_session_auth.leeway allows for small skew.",
            ),
            Rejection::UnknownKey(_) => {
                Some("Add the issuer's key with auth.add_key() or auth.import_jwks().")
            }
            Rejection::RetiredKey(_) => Some("Sign tokens with an active key."),
            Rejection::Revoked => Some("Sign in again to get a new token."),
            _ => None,
        }
    }
}

/// The outcome of a verification that did not produce claims.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum VerifyError {
    /// The token is not acceptable.
    #[error("invalid token: {0}")]
    Rejected(#[from] Rejection),
    /// No token can be accepted: the keyring holds no active key.
    #[error("no verification key is configured")]
    NoKeyConfigured,
}

/// Why key text given to `add_key` / `import_jwks` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("{alg} needs {expected}, but the key given is {found}")]
    TypeMismatch {
        alg: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("{alg} needs a secret of at least {min} bytes; the one given has {actual}")]
    SecretTooShort {
        alg: &'static str,
        min: usize,
        actual: usize,
    },
    #[error("RSA keys must be 2048 to 4096 bits; the one given has {0} bits")]
    RsaKeySize(usize),
    #[error("the key contains private key material; give the public key only")]
    PrivateKeyMaterial,
    #[error("the key is not usable for signatures: {0}")]
    NotForSignatures(String),
    #[error("{0}")]
    Invalid(String),
    #[error("a kid must be 1 to {max} bytes without control characters", max = crate::MAX_KID_BYTES)]
    InvalidKid,
    #[error("{0}")]
    InvalidJwks(String),
}
