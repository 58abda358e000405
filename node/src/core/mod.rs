//! The lock table: a pure, deterministic state machine.
//!
//! Everything in this module is a function of the replicated log alone. It
//! never reads a clock, touches the disk or the network, or draws a random
//! number: time arrives inside each [`Command`] (stamped by the leader), and
//! fencing tokens are the log index the caller passes to [`LockTable::apply`].
//! That is what lets every replica, and every replay of the same log, reach
//! byte-identical state.

pub mod digest;
mod hashes;
mod lock_set;
mod model;
pub mod retired;
mod table;

pub use hashes::{parse_owner_hash, valid_process_hash, OwnerHashParts};
pub use model::{Caller, Change, Command, Lock, Op, Outcome, Process, Status};
pub use retired::Retired;
pub use table::{LockTable, OwnerStatus, TableImage};
