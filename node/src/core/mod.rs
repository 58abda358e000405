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
// The records and the table are documented item by item where it matters;
// their remaining fields and variants are covered by the module and type docs.
#[allow(missing_docs)]
mod model;
// Documented where it matters; the persisted record's fields are named plainly.
#[allow(missing_docs)]
pub mod retired;
#[allow(missing_docs)]
mod table;

pub use hashes::{parse_owner_hash, valid_process_hash, OwnerHashParts};
pub use model::{Change, Command, Lock, Op, Outcome, Process, Status};
pub use retired::Retired;
pub use table::{LockTable, OwnerStatus, TableImage};
