use pgrx::prelude::*;
use pgrx::JsonB;

use crate::verification::verify_or_raise;

/// `auth.verify(token)`: the claims of a valid token; anything else, NULL included, raises
/// `28000` (or `55000` when no key is configured). STABLE, not IMMUTABLE: the result depends
/// on the clock, the settings and the keyring. PARALLEL RESTRICTED: it reads the extension's tables.
#[pg_extern(stable, parallel_restricted)]
fn verify(token: Option<&str>) -> JsonB {
    JsonB(serde_json::Value::Object(verify_or_raise(token)))
}
