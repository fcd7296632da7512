//! Unusual activity: counting what happens (`stats`), remembering recent rejections
//! (`rejections`), detecting the unusual (`rules`) and acting on it (`actions`), with the
//! address a deployment trusts (`client_ip`), in memory shared by the cluster when the
//! library is preloaded (`memory`).

pub mod actions;
pub mod client_ip;
mod memory;
pub mod rejections;
pub mod rules;
pub mod stats;

pub use memory::request_shared_memory;
