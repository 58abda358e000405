//! The watch stream, `GET /v1/watch` (Server-Sent Events): the data of its
//! events, its query, and its 410 answer. Each SSE event is
//! `id: <log index>` (or `<log index>.<n>` when one entry has several
//! events), `event: <kind>` and `data: <one JSON object>`; see
//! `docs/http-api.md` ("Watch").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ErrorDetail;
use crate::lock::Lock;
use crate::wire_enum::wire_enum;

wire_enum! {
    /// What happened, the SSE `event:` name of a [`WatchEvent`].
    pub enum WatchKind {
        /// A free key was granted (`lock`: the new lock).
        Acquired = "acquired",
        /// The holder acquired its own live lock again: an extend that
        /// keeps the fencing token.
        Reacquired = "reacquired",
        /// The holder extended its lock.
        Extended = "extended",
        /// The holder released its lock (`lock` is null).
        Released = "released",
        /// A sweep removed a lock whose own TTL ran out (`reason: ttl`).
        Expired = "expired",
        /// The lock's process ended or its keep-alives lapsed: the lock is no
        /// longer live (`lock` is null; `previous` is the dead lock).
        Freed = "freed",
        /// Another owner was granted a key whose lock had died unreported
        /// (its TTL or its process ran out, not yet swept): `previous` is
        /// the dead lock, `reason` why it died, `lock` the new one.
        TakenOver = "taken_over",
        /// A keep-alive started a process (a new incarnation).
        ProcessRegistered = "process_registered",
        /// A keep-alive refreshed a live process (`alive_until` moved).
        ProcessKeptAlive = "process_kept_alive",
        /// The process was ended by its owner; its locks follow as `freed`.
        ProcessEnded = "process_ended",
        /// The process's keep-alives lapsed and the log recorded it (a sweep,
        /// or a keep-alive that starts a new incarnation); its locks follow
        /// as `freed`.
        ProcessExpired = "process_expired",
        /// A new leader's takeover marker moved every deadline (lock
        /// `expires_at`, process `alive_until`) live before it by `gap_ms`.
        /// No `key`: sent to every watcher.
        DeadlinesShifted = "deadlines_shifted",
    }
}

wire_enum! {
    /// The log operation of the entry an event comes from.
    pub enum WatchCause {
        /// An acquire.
        Acquire = "acquire",
        /// An extend.
        Extend = "extend",
        /// A release.
        Release = "release",
        /// A process keep-alive.
        Keepalive = "keepalive",
        /// A process end.
        EndProcess = "end_process",
        /// A sweep of records past their time (leader, every `--sweep-ms`).
        Sweep = "sweep",
        /// A new leader's takeover marker.
        LeaderTakeover = "leader_takeover",
    }
}

wire_enum! {
    /// Why a lock or process stopped being live.
    pub enum EndReason {
        /// Its own TTL ran out.
        Ttl = "ttl",
        /// Its process was ended.
        ProcessEnded = "process_ended",
        /// Its process's keep-alives lapsed.
        ProcessExpired = "process_expired",
    }
}

/// A process record as the watch stream shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WatchProcess {
    /// `{hostname}/{pid}.{nanoseconds}`.
    pub process_hash: String,
    /// The TTL of its last keep-alive.
    pub ttl_ms: u64,
    /// Log time it dies unless a keep-alive comes first.
    pub alive_until: u64,
    /// Log time its current incarnation began.
    pub since: u64,
    /// The `info` of its keep-alives, or null.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub info: Option<serde_json::Value>,
}

/// The `data:` of one watch event.
///
/// Lock events have `key`; process events have `process_hash`; the
/// `deadlines_shifted` event has `gap_ms` and neither.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WatchEvent {
    /// The SSE id: `<index>` or `<index>.<n>` (n from 1, in order).
    pub id: EventId,
    /// The log index of the entry.
    pub index: u64,
    /// The entry's log time (ms since the Unix epoch).
    pub time_ms: u64,
    /// What happened.
    pub kind: WatchKind,
    /// The operation of the entry.
    pub cause: WatchCause,
    /// Why a lock or process ended (`expired`, `freed`, `taken_over`,
    /// `process_expired`), else null.
    pub reason: Option<EndReason>,
    /// The lock's key, for lock events.
    pub key: Option<String>,
    /// The lock after the change; null when the key is free.
    pub lock: Option<Lock>,
    /// The lock before the change, when it ended or was replaced.
    pub previous: Option<Lock>,
    /// The process, for process events (and for `freed`).
    pub process_hash: Option<String>,
    /// The process record after the change; null once it is gone.
    pub process: Option<WatchProcess>,
    /// For process events: the keys of the locks bound to the process.
    pub keys: Option<Vec<String>>,
    /// For `deadlines_shifted`: how far deadlines moved.
    pub gap_ms: Option<u64>,
}

/// A position in the watch stream: after entry `index`, or after sub-event
/// `sub` of it. Written `<index>` or `<index>.<sub>`; `<index>` is the end
/// of that entry (after all its events).
///
/// ```
/// use locker_proto::EventId;
/// let a: EventId = "12.2".parse().unwrap();
/// let b: EventId = "12".parse().unwrap();
/// assert!(a < b && b < "13.1".parse().unwrap());
/// assert_eq!(b.to_string(), "12");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// The log index.
    pub index: u64,
    /// The sub-event (1-based), or `u32::MAX` for the whole entry.
    pub sub: u32,
}

impl EventId {
    /// The end of entry `index`: every event of it and before.
    pub const fn entry(index: u64) -> Self {
        EventId {
            index,
            sub: u32::MAX,
        }
    }

    /// Sub-event `sub` (1-based) of entry `index`.
    pub const fn sub_event(index: u64, sub: u32) -> Self {
        EventId { index, sub }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sub == u32::MAX {
            write!(f, "{}", self.index)
        } else {
            write!(f, "{}.{}", self.index, self.sub)
        }
    }
}

/// An event id that is not `<index>` or `<index>.<n>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an event id (<log index> or <log index>.<n>)")]
pub struct BadEventId(pub String);

impl FromStr for EventId {
    type Err = BadEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadEventId(s.to_string());
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let (index, sub) = match s.split_once('.') {
            Some((i, n)) if digits(i) && digits(n) => {
                let n: u32 = n.parse().map_err(|_| bad())?;
                if n == 0 || n == u32::MAX {
                    return Err(bad());
                }
                (i, n)
            }
            None if digits(s) => (s, u32::MAX),
            _ => return Err(bad()),
        };
        Ok(EventId {
            index: index.parse().map_err(|_| bad())?,
            sub,
        })
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for EventId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"^\d+(\.\d+)?$"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for EventId {}

/// The `data:` of the first event of every stream, `event: start` (its SSE
/// id is the position the stream starts after).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WatchStart {
    /// The stream sends every event after this position.
    pub id: EventId,
    /// The node serving the stream (from its own applied log).
    pub node_id: u64,
    /// That node's applied index when the stream started.
    pub applied_index: u64,
    /// The oldest `since` this node can still serve.
    pub oldest_index: u64,
}

wire_enum! {
    /// Why the node closed a watch stream.
    pub enum CloseReason {
        /// The watcher fell so far behind that the events it needs were
        /// dropped from the node's history: resume from `last_id` (likely a
        /// 410: re-read, then resume).
        TooSlow = "too_slow",
        /// The node installed a snapshot (it was far behind its leader), so
        /// the entries it skipped have no events: re-read, then resume.
        Resync = "resync",
        /// The node is shutting down: resume on another node.
        ShuttingDown = "shutting_down",
        /// A reload of the tokens file removed the stream's token, took its
        /// read role or changed the prefixes it may see: reconnect (a
        /// removed token is then refused, a changed one sees its new view).
        Unauthorized = "unauthorized",
    }
}

/// The `data:` of `event: closed`, the last event of a stream the node
/// ends (it has no SSE id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WatchClosed {
    /// Why.
    pub reason: CloseReason,
    /// The position of the last event sent (or the start position).
    pub last_id: EventId,
    /// Its log index.
    pub last_index: u64,
}

/// The query of `GET /v1/watch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// Only locks whose key starts with this, and processes whose hash
    /// starts with it or that hold such a lock (at most 1024 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(schema_with = crate::schemas::prefix))]
    pub prefix: Option<String>,
    /// Start after this event id (`<index>` or `<index>.<n>`); absent: from
    /// now. `Last-Event-ID` takes precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(schema_with = crate::schemas::event_id))]
    pub since: Option<String>,
    /// `true` (or `1`): without `since`, start at an index a quorum
    /// confirmed (the leader's read index) instead of this node's applied
    /// index.
    #[serde(
        default,
        deserialize_with = "linearizable_flag",
        skip_serializing_if = "Option::is_none"
    )]
    pub linearizable: Option<bool>,
}

/// The 410 answer to a watch that starts before the node's oldest event:
/// `{"error":{"code":"COMPACTED",...},"oldest_index":N}`. Re-read the state,
/// then watch with `since` at or after `oldest_index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompactedAnswer {
    /// Code `COMPACTED`.
    pub error: ErrorDetail,
    /// The oldest `since` this node can serve.
    pub oldest_index: u64,
}

/// The `linearizable` query flag: `true`/`1` or `false`/`0`, else refused.
fn linearizable_flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    use serde::de::Error;
    match Option::<String>::deserialize(d)?.as_deref() {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(other) => Err(D::Error::custom(format!(
            "linearizable must be true, false, 1 or 0, not {other:?}"
        ))),
    }
}

/// The answer of `GET /v1/read-index`: the log index a quorum confirmed the
/// leader at (ReadIndex). A replica that has applied it has seen every write
/// answered before the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadIndexAnswer {
    /// The confirmed log index.
    pub index: u64,
}
