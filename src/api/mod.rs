//! Everything SQL sees. Functions land in the extension's schema, `auth`.

mod activity;
mod audit;
mod cache_invalidation;
mod earlier_versions;
mod identity;
pub(crate) mod keys;
mod planner_support;
pub(crate) mod revocation;
mod revocation_triggers;
mod sessions;
pub(crate) mod signing;
mod verify;
