//! The row trigger that keeps the shared revocation filter exact (`revocation/filter/`).

use pg_session_auth_core::revocation_filter::FilterKey;
use pgrx::prelude::*;

use crate::errors::{raise, Failure};
use crate::revocation::filter::add;

/// Row trigger on the revocation tables: adds the written key to the filter. Its argument
/// names the table's kind: `session`, `user` or `token`.
#[pg_trigger]
fn note_revocation<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let Some(row) = trigger.new() else {
        return Ok(None);
    };
    let kind = trigger.extra_args()?.into_iter().next().unwrap_or_default();
    let unreadable = |error: pgrx::datum::TryFromDatumError| -> ! {
        raise(Failure::ObjectsAltered {
            what: format!("note_revocation cannot read the revoked key: {error}"),
        })
    };
    match kind.as_str() {
        "session" => {
            let id = row.get_by_name::<pgrx::Uuid>("session_id");
            if let Some(id) = id.unwrap_or_else(|e| unreadable(e)) {
                add(FilterKey::Session(id.as_bytes()));
            }
        }
        "user" => {
            let user = row.get_by_name::<&str>("user_id");
            if let Some(user) = user.unwrap_or_else(|e| unreadable(e)) {
                add(FilterKey::User(user));
            }
        }
        "token" => {
            let jti = row.get_by_name::<&str>("jti");
            if let Some(jti) = jti.unwrap_or_else(|e| unreadable(e)) {
                add(FilterKey::Token(jti));
            }
        }
        other => raise(Failure::ObjectsAltered {
            what: format!("note_revocation does not know the kind {other:?}"),
        }),
    }
    Ok(None)
}
