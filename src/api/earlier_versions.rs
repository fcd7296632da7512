//! Entry points that earlier versions' SQL definitions call.
//!
//! A new library is installed before each database runs `ALTER EXTENSION pg_session_auth
//! UPDATE`; until then the database's functions still name the C symbols of the version they
//! were created by, with that version's arguments. Every symbol an earlier release's SQL
//! names with other arguments than today's stays here, with those arguments, and does what
//! that function does now (no SQL is generated for them). Version 0.3.0 added `issuer`
//! arguments to these four.

use pgrx::prelude::*;
use pgrx::Uuid;

use super::keys::{add_key_for_issuer, import_jwks_for_issuer};
use super::revocation::{revoke_user_at_issuer, revoke_user_uuid_at_issuer};
use crate::jsonb::JsonbArgument;

/// `auth.add_key(kid, alg, key)` of versions 0.1.0 and 0.2.0.
#[pg_extern(sql = false, security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn add_key(kid: Option<&str>, alg: Option<&str>, key: Option<&str>) {
    add_key_for_issuer(kid, alg, key, None);
}

/// `auth.import_jwks(jwks)` of versions 0.1.0 and 0.2.0.
#[pg_extern(sql = false, security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn import_jwks(jwks: Option<JsonbArgument>) -> i32 {
    import_jwks_for_issuer(jwks, None)
}

/// `auth.revoke_user(user_id text, reason)` of versions 0.1.0 and 0.2.0.
#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn revoke_user(user_id: Option<&str>, reason: Option<&str>) {
    revoke_user_at_issuer(user_id, reason, None);
}

/// `auth.revoke_user(user_id uuid, reason)` of versions 0.1.0 and 0.2.0.
#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn revoke_user_uuid(user_id: Option<Uuid>, reason: Option<&str>) {
    revoke_user_uuid_at_issuer(user_id, reason, None);
}
