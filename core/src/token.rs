//! Compact JWS serialisation (RFC 7515 §7.1), strictly: three base64url parts, no padding,
//! canonical encoding, a JSON-object header.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::error::Rejection;

/// Header parameters that are never accepted: they would let the token choose or fetch its
/// own key (`jwk`, `jku`, `x5u`, `x5c`), demand processing we do not do (`crit`), or belong
/// to JWE (`enc`, `zip`).
pub const FORBIDDEN_HEADERS: [&str; 7] = ["crit", "jwk", "jku", "x5u", "x5c", "enc", "zip"];

/// The header members that verification uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: String,
    pub kid: Option<String>,
}

/// A structurally valid compact JWS, signature not yet checked.
#[derive(Debug)]
pub struct CompactJws<'a> {
    pub header: Header,
    /// `header.payload` exactly as received: what the signature covers.
    pub signing_input: &'a str,
    pub payload_b64: &'a str,
    pub signature: Vec<u8>,
}

pub(crate) fn decode_part(part: &str, what: &'static str) -> Result<Vec<u8>, Rejection> {
    if part.is_empty() {
        return Err(Rejection::Malformed(what));
    }
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Rejection::Malformed(what))
}

/// Splits and decodes a compact JWS. The size bound is applied before anything else.
pub fn parse_compact(token: &str, max_bytes: usize) -> Result<CompactJws<'_>, Rejection> {
    if token.len() > max_bytes {
        return Err(Rejection::TooLarge {
            size: token.len(),
            limit: max_bytes,
        });
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed(
            "A token is three base64url parts separated by dots (compact JWS).",
        ));
    };
    let header_json = decode_part(header_b64, "The header is not base64url without padding.")?;
    let signature = decode_part(
        signature_b64,
        "The signature is not base64url without padding.",
    )?;
    // The payload is decoded only after the signature is checked; here its alphabet is.
    if payload_b64.is_empty()
        || !payload_b64
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Rejection::Malformed(
            "The payload is not base64url without padding.",
        ));
    }
    let header = parse_header(&header_json)?;
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    Ok(CompactJws {
        header,
        signing_input,
        payload_b64,
        signature,
    })
}

fn parse_header(json: &[u8]) -> Result<Header, Rejection> {
    let object: Map<String, Value> = serde_json::from_slice(json)
        .map_err(|_| Rejection::Malformed("The header is not a JSON object."))?;
    if let Some(name) = FORBIDDEN_HEADERS
        .iter()
        .find(|name| object.contains_key(**name))
    {
        return Err(Rejection::ForbiddenHeader(name));
    }
    let alg = match object.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        Some(_) => {
            return Err(Rejection::Malformed(
                "The header's \"alg\" is not a string.",
            ))
        }
        None => return Err(Rejection::Malformed("The header has no \"alg\".")),
    };
    let kid = match object.get("kid") {
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => {
            return Err(Rejection::Malformed(
                "The header's \"kid\" is not a string.",
            ))
        }
        None => None,
    };
    Ok(Header { alg, kid })
}
