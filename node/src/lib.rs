//! Locker: a clustered lock service for singleton jobs.
//!
//! See ARCHITECTURE.md at the repository root for the map of this crate.

pub mod core;
pub mod store;
pub mod types;
