//! Everything SQL sees. Functions land in the extension's schema, `auth`.

mod keys;
mod verify;
