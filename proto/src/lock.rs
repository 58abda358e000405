//! The lock record as it travels in answers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A lease on a key, as the node reports it. Every field is always present;
/// `process_hash` and `trace` are `null` when absent (never omitted).
///
/// Times are milliseconds since the Unix epoch in the cluster's log time, not
/// any machine's clock: use them for display, never for local deadlines.
///
/// ```
/// let json = r#"{"key":"k","owner_hash":"k@h/1.2.3","process_hash":"h/1.2","trace":null,
///   "acquired_at":1,"extended_at":2,"expires_at":3,"ttl_ms":300000,"fencing_token":42}"#;
/// let lock: locker_proto::Lock = serde_json::from_str(json).unwrap();
/// assert_eq!(lock.fencing_token, 42);
/// assert_eq!(lock.trace, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lock {
    /// The lock's key.
    pub key: String,
    /// Who holds it: one run of one job,
    /// `{key}@{hostname}/{pid}.{nanoseconds}.{seq}[#{trace}]`.
    pub owner_hash: String,
    /// The process the lock lives and dies with; `null`: it lives by its TTL alone.
    pub process_hash: Option<String>,
    /// Free text kept with the lock.
    pub trace: Option<String>,
    /// When this owner was granted the lock.
    pub acquired_at: u64,
    /// When it was last extended (equal to `acquired_at` at first).
    pub extended_at: u64,
    /// When its own TTL ends unless extended.
    pub expires_at: u64,
    /// The TTL of the last acquire or extend.
    pub ttl_ms: u64,
    /// Grows with every grant of the key: successive holders have strictly
    /// increasing tokens.
    pub fencing_token: u64,
}

impl fmt::Display for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (fencing token {}",
            self.owner_hash, self.fencing_token
        )?;
        if let Some(p) = &self.process_hash {
            write!(f, ", process {p}")?;
        }
        f.write_str(")")
    }
}
