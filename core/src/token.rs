//! Compact JWS serialisation (RFC 7515 §7.1), strictly: three base64url parts, no padding,
//! canonical encoding, a JSON-object header.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::error::Rejection;
use crate::Claims;

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

impl CompactJws<'_> {
    /// Decodes and parses the payload: call only once the signature is known to be good.
    ///
    /// The claims set must be a JSON object whose member names are unique (RFC 7519 §4
    /// allows rejecting duplicates; parsers disagree on which one wins) and whose strings,
    /// member names included, hold no U+0000 at any depth (PostgreSQL's `jsonb` cannot store
    /// it).
    pub fn claims(&self) -> Result<Claims, Rejection> {
        let payload = URL_SAFE_NO_PAD
            .decode(self.payload_b64)
            .map_err(|_| Rejection::Malformed("The payload is not base64url without padding."))?;
        parse_object(&payload, &CLAIMS_TEXTS)
    }
}

/// The `Malformed` details for one part of the token.
struct PartTexts {
    not_object: &'static str,
    duplicate: &'static str,
    nul: &'static str,
}

const HEADER_TEXTS: PartTexts = PartTexts {
    not_object: "The header is not a JSON object.",
    duplicate: "The header has a member name more than once.",
    nul: "The header contains a NUL character (\\u0000).",
};

const CLAIMS_TEXTS: PartTexts = PartTexts {
    not_object: "The payload is not a JSON object.",
    duplicate: "The claims have a member name more than once.",
    nul: "The claims contain a NUL character (\\u0000).",
};

/// Parses a header or claims set: a JSON object without duplicate member names at its top
/// level and without U+0000 in any string or member name.
///
/// `serde_json` keeps the last of duplicate names and has no hook for seeing them without a
/// visitor of our own (which would need `serde` as a direct dependency), so the text that
/// `serde_json` has just accepted as JSON is scanned once more, byte by byte, without
/// allocating: the members at depth 1 are counted (one `:` each, outside strings) and compared
/// with the number of distinct names in the map, and each escape is looked at for `\u0000`,
/// the only way a JSON text can carry U+0000 (a raw control character is not valid JSON).
fn parse_object(json: &[u8], texts: &PartTexts) -> Result<Map<String, Value>, Rejection> {
    let object: Map<String, Value> =
        serde_json::from_slice(json).map_err(|_| Rejection::Malformed(texts.not_object))?;
    let scan = scan_valid_json(json);
    if scan.has_nul {
        return Err(Rejection::Malformed(texts.nul));
    }
    if scan.top_level_members != object.len() {
        return Err(Rejection::Malformed(texts.duplicate));
    }
    Ok(object)
}

struct Scan {
    /// Members of the outermost object, duplicates counted each time.
    top_level_members: usize,
    /// Some string (value or member name) has the escape `\u0000`.
    has_nul: bool,
}

/// Scans JSON text that `serde_json` has accepted. Only valid JSON reaches it, so the
/// structure needs no checking: outside strings, `{`/`[` and `}`/`]` change the depth and a
/// `:` at depth 1 separates one member of the outermost object from its value; inside
/// strings, a backslash starts an escape (`\"`, `\\`, …, `\uXXXX`) and a quote ends it.
fn scan_valid_json(json: &[u8]) -> Scan {
    let mut scan = Scan {
        top_level_members: 0,
        has_nul: false,
    };
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < json.len() {
        let byte = json[i];
        if in_string {
            match byte {
                b'\\' => {
                    if json.get(i + 1..i + 6) == Some(&b"u0000"[..]) {
                        scan.has_nul = true;
                    }
                    // Skips the escaped character: `\"` and `\\` do not end or start anything.
                    i += 2;
                    continue;
                }
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth = depth.saturating_sub(1),
                b':' if depth == 1 => scan.top_level_members += 1,
                _ => {}
            }
        }
        i += 1;
    }
    scan
}

fn parse_header(json: &[u8]) -> Result<Header, Rejection> {
    let object = parse_object(json, &HEADER_TEXTS)?;
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
