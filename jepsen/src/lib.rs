//! Locker's Jepsen-style test suite: history model, checkers, report, and the
//! runner that drives real clusters under faults.

pub mod checker;
pub mod history;
