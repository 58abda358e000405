//! From the core's records to the wire types of `locker-proto`.
//!
//! The core keeps one status enum and one lock record for the table, the
//! disk and Raft; the wire splits statuses by route (a lock operation cannot
//! answer `RUNNING`). Converting here, at the edge, keeps JSON concerns out
//! of the core and makes an impossible status a loud `500 INTERNAL` instead
//! of a body a client cannot parse.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use locker_proto::{
    ErrorCode, KeepaliveAnswer, Lock, LockAnswer, LockOpStatus, OwnerStatus, ProcessStatus,
    RaftState, StatusAnswer,
};
use openraft::ServerState;

use super::error::ApiError;
use crate::core::{self, Outcome, Status};

/// The wire form of a lock record. Destructured field by field, so a field
/// added to the core record does not compile until it is placed on the wire
/// (or deliberately left off).
pub fn wire_lock(l: core::Lock) -> Lock {
    let core::Lock {
        key,
        owner_hash,
        process_hash,
        trace,
        acquired_at,
        extended_at,
        expires_at,
        ttl_ms,
        fencing_token,
        // Which token holds a lock is the operator's business, not the wire's.
        token: _,
    } = l;
    Lock {
        key,
        owner_hash,
        process_hash,
        trace,
        acquired_at,
        extended_at,
        expires_at,
        ttl_ms,
        fencing_token,
    }
}

fn impossible(route: &str, s: Status) -> ApiError {
    ApiError::internal(format!("the lock table answered {} to {route}", s.as_str()))
}

/// The status of acquire, extend and release.
pub fn lock_op_status(s: Status) -> Result<LockOpStatus, ApiError> {
    match s {
        Status::Success => Ok(LockOpStatus::Success),
        Status::SomeoneElseHoldsLock => Ok(LockOpStatus::SomeoneElseHoldsLock),
        Status::NoKey => Ok(LockOpStatus::NoKey),
        Status::NoRunningProcess => Ok(LockOpStatus::NoRunningProcess),
        // Not a seed status: an error, so seed-shaped clients see a refusal
        // they cannot mistake for a lock answer.
        Status::OwnerHashRetired => Err(ApiError::new(
            ErrorCode::OwnerHashRetired,
            "this owner hash names a run whose lock has ended (released, expired or its process \
             died): nothing was done; acquire with a new owner hash",
        )),
        Status::Forbidden => Err(forbidden_process()),
        Status::LimitExceeded => Err(limit_exceeded("lock records")),
        Status::Running | Status::MalformedOwnerHash => Err(impossible("a lock operation", s)),
    }
}

fn forbidden_process() -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        "this process was registered by another token: nothing was done",
    )
}

fn limit_exceeded(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::LimitExceeded,
        format!("the limit of {what} (of this node or of this token) is reached: nothing was done"),
    )
}

/// The status of an owner query (every core status but `SUCCESS`).
pub fn owner_status(s: Status) -> Result<OwnerStatus, ApiError> {
    match s {
        Status::Running => Ok(OwnerStatus::Running),
        Status::SomeoneElseHoldsLock => Ok(OwnerStatus::SomeoneElseHoldsLock),
        Status::NoKey => Ok(OwnerStatus::NoKey),
        Status::NoRunningProcess => Ok(OwnerStatus::NoRunningProcess),
        Status::MalformedOwnerHash => Ok(OwnerStatus::MalformedOwnerHash),
        Status::Success | Status::OwnerHashRetired | Status::Forbidden | Status::LimitExceeded => {
            Err(impossible("an owner query", s))
        }
    }
}

/// The status of a keep-alive or of ending a process.
pub fn process_status(s: Status) -> Result<ProcessStatus, ApiError> {
    match s {
        Status::Success => Ok(ProcessStatus::Success),
        Status::NoKey => Ok(ProcessStatus::NoKey),
        Status::Forbidden => Err(forbidden_process()),
        Status::LimitExceeded => Err(limit_exceeded("process records")),
        _ => Err(impossible("a process route", s)),
    }
}

/// Answer to acquire, extend and release, with the HTTP status that goes
/// with its lock status.
pub fn lock_answer(o: Outcome) -> Result<Response, ApiError> {
    let status = lock_op_status(o.status)?;
    let body = LockAnswer {
        status,
        lock: o.lock.map(wire_lock),
    };
    Ok((http(status.http_status()), Json(body)).into_response())
}

/// Answer to a keep-alive: the core always says until when the process lives.
pub fn keepalive_answer(o: Outcome) -> Result<Response, ApiError> {
    let status = process_status(o.status)?;
    let alive_until = o.alive_until.ok_or_else(|| {
        ApiError::internal("the lock table answered a keep-alive without alive_until")
    })?;
    let body = KeepaliveAnswer {
        status,
        alive_until,
    };
    Ok((http(status.http_status()), Json(body)).into_response())
}

/// Answer to ending a process: 200 `SUCCESS` or 404 `NO_KEY`.
pub fn end_answer(o: Outcome) -> Result<Response, ApiError> {
    let status = process_status(o.status)?;
    Ok((http(status.http_status()), Json(StatusAnswer { status })).into_response())
}

/// A node's Raft role, matched variant by variant: the wire spelling must not
/// depend on openraft's `Debug` output.
pub fn raft_state(s: ServerState) -> RaftState {
    match s {
        ServerState::Learner => RaftState::Learner,
        ServerState::Follower => RaftState::Follower,
        ServerState::Candidate => RaftState::Candidate,
        ServerState::Leader => RaftState::Leader,
        ServerState::Shutdown => RaftState::Shutdown,
    }
}

/// The proto statuses carry their HTTP status as a number; every one of them
/// is a valid status code.
fn http(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
