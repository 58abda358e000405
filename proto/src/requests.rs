//! The JSON bodies and query strings the node accepts. Bodies refuse unknown
//! fields (`400 INVALID_JSON`); an optional field may be omitted or `null`.
//! Serialising omits absent optional fields, so clients send short bodies.

use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize};

/// `POST /v1/locks/{key}/acquire`. Every field is optional; an empty body
/// takes the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// Who asks; must parse and name the path's key. Absent: the node builds
    /// one and answers it in `lock.owner_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::owner_hash_opt))]
    pub owner_hash: Option<String>,
    /// The process the lock lives with; absent: it lives by its TTL alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::process_hash))]
    pub process_hash: Option<String>,
    /// Free text kept with the lock (at most 1024 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::trace))]
    pub trace: Option<String>,
    /// The lock's TTL in ms: 100 to 604800000 (7 days), default 300000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::lock_ttl_ms))]
    pub ttl_ms: Option<u64>,
    /// How long to wait in line when the key is held, in ms: 0 (default) to
    /// 600000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::wait_ms))]
    pub wait_ms: Option<u64>,
}

/// `POST /v1/locks/{key}/extend`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// The holder.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::owner_hash))]
    pub owner_hash: String,
    /// The new TTL in ms, counted from now: 100 to 604800000, default 300000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::lock_ttl_ms))]
    pub ttl_ms: Option<u64>,
}

/// `POST /v1/locks/{key}/release`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The holder.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::owner_hash))]
    pub owner_hash: String,
}

/// `PUT /v1/processes/{process_hash}`. Both fields optional; an empty body
/// takes the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeepaliveRequest {
    /// The process TTL in ms: 100 to 3600000 (1 hour), default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::process_ttl_ms))]
    pub ttl_ms: Option<u64>,
    /// Any JSON about the process (host, version...), at most 16 KiB as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schemas::info))]
    pub info: Option<serde_json::Value>,
}

/// `POST /v1/cluster/members` (operator route, needs the cluster secret).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// The new node's id (not 0, never one of a wiped node).
    pub id: u64,
    /// Its peer address, where it was started with `--join`.
    pub peer_addr: String,
}

/// `POST /v1/cluster/leader` (operator route, needs the cluster secret).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TransferLeaderRequest {
    /// The voter that should lead.
    pub id: u64,
}

/// The query of `GET /v1/locks/{key}` and `GET /v1/owners/{owner_hash}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
// Without it utoipa publishes the fields as required path parameters.
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// `true` (or `1`): answer from the asked node's replica, maybe behind.
    #[serde(
        default,
        deserialize_with = "stale_flag",
        skip_serializing_if = "Option::is_none"
    )]
    pub stale: Option<bool>,
}

/// The query of `GET /v1/locks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
// Without it utoipa publishes the fields as required path parameters.
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only keys starting with this (at most 1024 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(schema_with = crate::schemas::prefix))]
    pub prefix: Option<String>,
    /// At most this many locks: 1 to 10000, default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(schema_with = crate::schemas::list_limit))]
    pub limit: Option<usize>,
    /// `true` (or `1`): answer from the asked node's replica, maybe behind.
    #[serde(
        default,
        deserialize_with = "stale_flag",
        skip_serializing_if = "Option::is_none"
    )]
    pub stale: Option<bool>,
}

/// A flag as a query string carries it (text), or as JSON does (a bool).
#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Text(String),
}

/// The `stale` query flag: `true`/`1` or `false`/`0`; anything else is
/// refused (`400 INVALID_QUERY`). One parse for every reader of the flag.
pub fn stale_flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Flag>::deserialize(d)? {
        None => Ok(None),
        Some(Flag::Bool(b)) => Ok(Some(b)),
        Some(Flag::Text(t)) => match t.as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            other => Err(D::Error::custom(format!(
                "stale must be true, false, 1 or 0, not {other:?}"
            ))),
        },
    }
}
