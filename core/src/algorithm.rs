/// A JWS algorithm this project accepts. Anything else (`none`, `ES512`, `HS1`, a differently
/// cased name) is unsupported: names are matched exactly, as RFC 7518 registers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// The kind of key an algorithm needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A shared secret of at least this many bytes (the hash output size, RFC 7518 §3.2).
    Hmac {
        min_secret_bytes: usize,
    },
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            KeyKind::Hmac { .. } => "an HMAC secret",
            KeyKind::Rsa => "an RSA public key",
            KeyKind::P256 => "an EC P-256 public key",
            KeyKind::P384 => "an EC P-384 public key",
            KeyKind::Ed25519 => "an Ed25519 public key",
        }
    }
}

impl Algorithm {
    pub const ALL: [Algorithm; 12] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// Exact, case-sensitive lookup of a registered name.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    pub fn key_kind(self) -> KeyKind {
        match self {
            Algorithm::HS256 => KeyKind::Hmac {
                min_secret_bytes: 32,
            },
            Algorithm::HS384 => KeyKind::Hmac {
                min_secret_bytes: 48,
            },
            Algorithm::HS512 => KeyKind::Hmac {
                min_secret_bytes: 64,
            },
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyKind::Rsa,
            Algorithm::ES256 => KeyKind::P256,
            Algorithm::ES384 => KeyKind::P384,
            Algorithm::EdDSA => KeyKind::Ed25519,
        }
    }

    pub fn is_symmetric(self) -> bool {
        matches!(self.key_kind(), KeyKind::Hmac { .. })
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
