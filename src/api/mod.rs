//! Everything SQL sees. Functions land in the extension's schema, `auth`.

mod identity;
mod keys;
mod revocation;
mod verify;
