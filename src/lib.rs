//! pg_session_auth: JWTs verified inside PostgreSQL.
//!
//! Layout (docs/ARCHITECTURE.md draws it): `api/` is every SQL object; `verification`,
//! `identity`, `request_settings`, `keyring` and `revocation/` are the extension's logic;
//! `cache` keeps per-backend caches current; `gucs` holds every setting and `errors` every
//! failure with its SQLSTATE; `queries/` the internal SQL; `pg/` every raw call into
//! PostgreSQL. The token, key, claim and revocation rules themselves live in the
//! server-independent `pg_session_auth_core` crate.

// Every unsafe block says why it is sound; unsafe operations inside unsafe fns are explicit.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use pgrx::prelude::*;

mod activity;
mod api;
mod audit;
mod cache;
mod durable;
mod errors;
mod gucs;
mod identity;
mod jsonb;
mod keyring;
mod pg;
mod planner_support;
mod request_settings;
mod revocation;
mod sessions;
mod signing_keys;

mod verification;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
extension_sql_file!(
    "../sql/sessions.sql",
    name = "sessions",
    requires = ["bootstrap"]
);
extension_sql_file!(
    "../sql/activity.sql",
    name = "activity",
    requires = ["sessions"]
);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::register();
    revocation::filter::request_shared_memory();
    activity::request_shared_memory();
    cache::register_callback();
    revocation::register_transaction_callbacks();
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Settings and one-off set-up of the `cargo pgrx test` cluster, kept in `pg_test_config/`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        include_str!("../pg_test_config/postgresql.conf")
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect()
    }
}
