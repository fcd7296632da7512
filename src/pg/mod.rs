//! Thin wrappers around PostgreSQL's C API. What differs between the supported majors
//! (14 to 18) lives in `compat`, and only there.

pub mod bgworker;
pub mod clock;
pub mod compat;
pub mod dsm;
pub mod heap_scan;
pub mod invalidation;
pub mod jsonb;
pub mod locks;
pub mod lwlock;
pub mod owner_spi;
pub mod planner;
pub mod roles;
pub mod settings;
pub mod shmem;
pub mod transaction;
pub mod transaction_events;
