//! Locker: a clustered lock service for singleton jobs.
//!
//! See ARCHITECTURE.md at the repository root for the map of this crate.

#![deny(missing_docs)]

pub mod api;
pub mod backup;
pub mod backup_tools;
mod bootstrap;
pub mod clock;
pub mod config;
pub mod core;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod guard;
pub mod metrics;
pub mod mutation;
pub mod network;
pub mod node;
pub mod proposer;
pub mod serve;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod types;
pub mod ui;
pub mod waiters;
pub mod watch;
pub mod wire_errors;
