//! Locker's Jepsen-style test suite: history model, checkers, report, and the
//! runner that drives real clusters under faults.

pub mod admin;
pub mod api;
pub mod bench;
pub mod checker;
pub mod client_api;
pub mod client_hosts;
pub mod clock_leader;
pub mod cluster;
pub mod crash_point;
pub mod durable_probe;
pub mod history;
pub mod job_beat;
pub mod lib_job;
pub mod mutations;
pub mod nemesis;
pub mod power_loss;
pub mod replicas;
pub mod report;
pub mod report_run;
pub mod rng;
pub mod rolling;
pub mod runner;
pub mod workload;
pub mod workload_run;
