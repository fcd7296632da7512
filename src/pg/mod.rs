//! Thin wrappers around PostgreSQL's C API. What differs between the supported majors
//! (14 to 18) lives in `compat`, and only there.

pub mod compat;
pub mod invalidation;
pub mod owner_spi;
pub mod transaction_events;
