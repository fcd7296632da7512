//! The identity of the current transaction: binding verified claims, and reading them back
//! for the claim functions.
//!
//! `auth.authenticate()` stores the verified claims in the setting `pg_session_auth.claims`,
//! transaction-locally, exactly as `SET LOCAL` would but with superuser context, which no
//! client has: the value is gone at COMMIT/ROLLBACK, undone by `ROLLBACK TO SAVEPOINT`, and
//! copied into parallel workers with the rest of the settings. Clients can neither `SET` it
//! nor read it (it is `SUPERUSER_ONLY`). Expiry is re-checked on every read against the
//! checks' clock (`verification::check_time`), so an identity stops working at the first
//! statement after `exp`.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::rc::Rc;

use pg_session_auth_core::identity::{has_expired, RolePolicy};
use pg_session_auth_core::{Claims, KeyRef, Rejection};
use pgrx::guc::GucContext;

use crate::gucs::{self, ClaimsSource};
use crate::pg::{roles, settings, transaction};
use crate::verification::check_time;
use crate::{errors, keyring, revocation};

const REQUEST_CLAIMS: &CStr = c"request.jwt.claims";
/// The whole-claims setting of old PostgREST versions; Supabase's `auth.jwt()` reads it first.
const LEGACY_REQUEST_CLAIMS: &CStr = c"request.jwt.claim";
const ROLE: &CStr = c"role";

/// Sets a setting until the end of the current transaction (or savepoint), as `SET LOCAL`,
/// with the privileges of `context`.
fn set_local(name: &CStr, value: &str, context: GucContext) {
    let value = CString::new(value).expect("verified claims contain no NUL character");
    settings::set_local(name, &value, context);
}

fn reject(rejection: Rejection) -> ! {
    errors::raise(rejection)
}

/// Records why the current identity is refused now (`activity/rejections.rs`), with its
/// subject: it was verified when it was bound.
fn record_refusal(rejection: &Rejection) {
    let claims = check_current(false, WholeClaims::Current).and_then(Result::ok);
    crate::verification::record_rejection(rejection, None, claims.as_deref());
}

/// Checks that the session user may run as `role`: it exists, is not a superuser, and the
/// session user is a member of it. Anything else is a rejected token, not a privilege error.
fn check_assumable(role: &str) {
    let assumable = roles::role_oid(role).is_some_and(|oid| {
        !roles::is_superuser(oid) && roles::can_set_role(roles::session_user(), oid)
    });
    if !assumable {
        reject(Rejection::RoleNotAllowed(role.to_owned()));
    }
}

/// The private setting's value: the key that verified the claims on the first line
/// (`<fingerprint, 16 hex digits> <kid>`; a kid has no control characters), the claims' JSON
/// after it.
fn bound_text(claims_json: &str, key: &KeyRef) -> String {
    format!("{:016x} {}\n{claims_json}", key.fingerprint, key.kid)
}

/// Splits the private setting's value into the key reference and the claims' JSON.
fn split_bound_text(text: &[u8]) -> Option<(KeyRef, &[u8])> {
    let newline = text.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&text[..newline]).ok()?;
    let (fingerprint, kid) = line.split_once(' ')?;
    let key = KeyRef {
        kid: kid.to_owned(),
        fingerprint: u64::from_str_radix(fingerprint, 16).ok()?,
    };
    Some((key, &text[newline + 1..]))
}

/// Binds verified claims to the current transaction: the private setting read by the claim
/// functions (with the key that verified them, so that retiring or replacing that key ends
/// the identity), `request.jwt.claims` for SQL written for PostgREST, and the role the token
/// names (when it names one). Raises `28000` for a role the token may not assume; since an
/// error aborts the statement, nothing is bound by halves.
pub fn bind(claims: &Claims, key: &KeyRef) {
    let role_claim = gucs::role_claim();
    let allowed = gucs::allowed_roles();
    let policy = RolePolicy::new(&role_claim, &allowed);
    let role = policy
        .requested_role(claims)
        .unwrap_or_else(|rejection| reject(rejection));
    if let Some(role) = role {
        check_assumable(role);
    }

    let text = serde_json::to_string(claims).expect("claims serialise");
    set_local(
        gucs::BOUND_CLAIMS_NAME,
        &bound_text(&text, key),
        GucContext::Suset,
    );
    set_local(REQUEST_CLAIMS, &text, GucContext::Userset);
    if let Some(role) = role {
        let context = if roles::current_user_is_superuser() {
            GucContext::Suset
        } else {
            GucContext::Userset
        };
        set_local(ROLE, role, context);
    }
    if !transaction::in_transaction_block() {
        pgrx::warning!(
            "auth.authenticate() outside a transaction block binds the identity for this statement only"
        );
    }
}

/// The bound claims' JSON (as `bind` wrote it) while an identity is bound in `verified`
/// mode; `None` otherwise (no identity, or claims come from requests).
pub fn bound_claims_json() -> Option<Vec<u8>> {
    if gucs::claims_source() != ClaimsSource::Verified {
        return None;
    }
    let text = setting(gucs::BOUND_CLAIMS_NAME)?;
    let (_, claims) = split_bound_text(&text)?;
    Some(claims.to_vec())
}

/// One bound claim as text (empty when the claims lack it), while an identity is bound in
/// `verified` mode; `None` otherwise.
pub fn bound_claim_text(name: &str) -> Option<Vec<u8>> {
    if gucs::claims_source() != ClaimsSource::Verified {
        return None;
    }
    let text = setting(gucs::BOUND_CLAIMS_NAME)?;
    let parsed = parse_cached(ClaimsSource::Verified, &text)?;
    let value = pg_session_auth_core::identity::claim_as_text(&parsed.claims, name);
    Some(value.unwrap_or_default().into_bytes())
}

/// The last claims text read and its parsed form.
struct ParsedClaims {
    source: ClaimsSource,
    text: Vec<u8>,
    parsed: Parsed,
}

/// Claims as read from a setting, with the key that verified them when they were bound by
/// `auth.authenticate()`.
#[derive(Clone)]
struct Parsed {
    claims: Rc<Claims>,
    key: Option<Rc<KeyRef>>,
}

thread_local! {
    /// A statement reads the same text many times (once per row without the planner
    /// rewrite), so it is parsed once.
    static PARSED: RefCell<Option<ParsedClaims>> = const { RefCell::new(None) };
}

/// A setting's current value, or `None` when unset or empty.
fn setting(name: &CStr) -> Option<Vec<u8>> {
    settings::value(name).filter(|value| !value.is_empty())
}

fn parse_cached(source: ClaimsSource, text: &[u8]) -> Option<Parsed> {
    PARSED.with(|cache| {
        if let Some(parsed) = cache.borrow().as_ref() {
            if parsed.source == source && parsed.text == text {
                return Some(parsed.parsed.clone());
            }
        }
        let (key, json) = match source {
            ClaimsSource::Verified => {
                let (key, json) = split_bound_text(text)?;
                (Some(Rc::new(key)), json)
            }
            ClaimsSource::Request => (None, text),
        };
        let claims: Claims = serde_json::from_slice(json).ok()?;
        // Request claims are whatever PostgREST (or a client) set: U+0000 in them would be cut
        // off by SQL casts of auth.jwt() values, so such claims are unparsable.
        if source == ClaimsSource::Request && pg_session_auth_core::identity::contains_nul(&claims)
        {
            return None;
        }
        let parsed = Parsed {
            claims: Rc::new(claims),
            key,
        };
        *cache.borrow_mut() = Some(ParsedClaims {
            source,
            text: text.to_vec(),
            parsed: parsed.clone(),
        });
        Some(parsed)
    })
}

/// The claims the claim functions see, or `None` (no identity: RLS fails closed). Raises
/// `28000` when they have been revoked since they were bound (or, in `request` mode, since
/// PostgREST verified them) — except in the transaction that revoked them (by signing out,
/// say), where they are simply gone: raising there would abort, and so undo, the sign-out.
///
/// `verified` mode: only what `auth.authenticate()` bound in this transaction, and only
/// until it expires. `request` mode: `request.jwt.claims` as PostgREST sets it; an `exp` in
/// the past also ends it (PostgREST admits tokens without `exp`, so none is required here).
pub fn current_claims() -> Option<Rc<Claims>> {
    usable(check_current(true, WholeClaims::Current)?)
}

/// Claims as the claim functions use them: refused ones (expired) are none; withdrawn ones
/// (revoked, or their key retired, replaced or removed since they were bound) raise.
fn usable(checked: Result<Rc<Claims>, Rejection>) -> Option<Rc<Claims>> {
    match checked {
        Ok(claims) => Some(claims),
        Err(Rejection::Revoked) if !revocation::revocation_written_in_this_transaction() => {
            record_refusal(&Rejection::Revoked);
            reject(Rejection::Revoked)
        }
        Err(rejection @ (Rejection::RetiredKey(_) | Rejection::UnknownKey(_))) => {
            record_refusal(&rejection);
            reject(rejection)
        }
        Err(_) => None,
    }
}

/// All claims, for `auth.jwt()`.
pub fn whole_claims() -> Option<Rc<Claims>> {
    usable(check_current(true, WholeClaims::LegacyFirst)?)
}

/// The current claims even if they have been revoked (still `None` once expired): whose
/// identity a sign-out or revocation acts for, also after a first one in this transaction.
pub fn current_claims_even_if_revoked() -> Option<Rc<Claims>> {
    check_current(false, WholeClaims::Current)?.ok()
}

/// Which setting holds the request's claims in `request` mode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WholeClaims {
    /// `request.jwt.claims` (what every claim but `auth.jwt()` reads, as in Supabase).
    Current,
    /// A non-empty legacy `request.jwt.claim` first (Supabase's `auth.jwt()`).
    LegacyFirst,
}

/// The current claims, or why they must be refused now; `None` when there are none.
fn check_current(
    check_revocation: bool,
    whole_claims: WholeClaims,
) -> Option<Result<Rc<Claims>, Rejection>> {
    let source = gucs::claims_source();
    let text = match source {
        ClaimsSource::Verified => setting(gucs::BOUND_CLAIMS_NAME)?,
        ClaimsSource::Request if whole_claims == WholeClaims::LegacyFirst => {
            setting(LEGACY_REQUEST_CLAIMS).or_else(|| setting(REQUEST_CLAIMS))?
        }
        ClaimsSource::Request => setting(REQUEST_CLAIMS)?,
    };
    let Some(Parsed { claims, key }) = parse_cached(source, &text) else {
        return match source {
            // Unparsable request claims are no identity to the claim functions (as in
            // Supabase's helpers, minus the error), and a reason to refuse the request.
            ClaimsSource::Request => Some(Err(Rejection::Malformed(
                "request.jwt.claims is not a JSON object.",
            ))),
            ClaimsSource::Verified => None,
        };
    };
    let exp_required = source == ClaimsSource::Verified;
    if (exp_required || claims.contains_key("exp"))
        && has_expired(&claims, check_time(), gucs::leeway())
    {
        return Some(Err(Rejection::Expired));
    }
    if check_revocation {
        if let Some(key) = key {
            if let Err(rejection) = keyring::with_keyring(|keys| keys.still_trusts(&key)) {
                return Some(Err(rejection));
            }
        }
        if revocation::claims_revoked(&claims) {
            return Some(Err(Rejection::Revoked));
        }
    }
    Some(Ok(claims))
}

/// One claim as text, as SQL's `claims ->> name` gives it. In `request` mode a non-empty
/// legacy `request.jwt.claim.<name>` setting takes precedence, as in Supabase's helpers —
/// unless the request's claims exist but are refused (expired, unparsable), in which case
/// there is no identity at all.
pub fn claim_text(name: &str) -> Option<String> {
    let checked = check_current(true, WholeClaims::Current);
    let refused = matches!(checked, Some(Err(_)));
    let claims = checked.and_then(usable);
    if gucs::claims_source() == ClaimsSource::Request && !refused {
        let legacy = CString::new(format!("request.jwt.claim.{name}")).ok()?;
        if let Some(value) = setting(&legacy) {
            return Some(String::from_utf8_lossy(&value).into_owned());
        }
    }
    pg_session_auth_core::identity::claim_as_text(&*claims?, name)
}

/// Why the current request's token must be refused now, if it must (`auth.check_request`).
pub fn request_rejection() -> Option<Rejection> {
    let rejection = check_current(true, WholeClaims::Current)?.err()?;
    record_refusal(&rejection);
    Some(rejection)
}
