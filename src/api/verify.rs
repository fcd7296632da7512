use pgrx::prelude::*;

use crate::jsonb::JsonbObject;

use crate::verification::verify_or_raise;

/// `auth.verify(token)`: the claims of a valid token; anything else, NULL included, raises
/// `28000` (or `55000` when no key is configured). STABLE, not IMMUTABLE: the result depends
/// on the clock, the settings and the keyring. PARALLEL RESTRICTED: it reads the extension's tables.
#[pg_extern(stable, parallel_restricted)]
fn verify(token: Option<&str>) -> JsonbObject {
    JsonbObject(verify_or_raise(token).0)
}
