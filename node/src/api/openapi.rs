//! The OpenAPI document, served at `/openapi.json`: paths from the handlers'
//! annotations, schemas from the `locker-proto` types the handlers really
//! parse and send (its `openapi` feature derives them), so the document
//! cannot drift from the wire.

use axum::Json;
use utoipa::OpenApi;

use super::{backup, cluster, locks, ops, processes, watch};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Locker",
        description = "A clustered lock service for singleton jobs. Every node serves every route; followers forward to the leader. Reads are linearizable unless `?stale=true`.",
    ),
    paths(
        processes::keepalive, processes::end, processes::list,
        locks::acquire, locks::extend, locks::release, locks::read, locks::list, locks::owner,
        cluster::status, cluster::nodes, cluster::add_member, cluster::remove_member, cluster::transfer_leader,
        ops::healthz, ops::readyz, ops::metrics, ops::digest, backup::backup,
        watch::watch, watch::read_index,
    ),
    components(schemas(
        locker_proto::Lock, locker_proto::LockOpStatus, locker_proto::OwnerStatus,
        locker_proto::ProcessStatus, locker_proto::RaftState, locker_proto::ErrorCode,
        locker_proto::LockAnswer, locker_proto::ReadAnswer, locker_proto::ListAnswer,
        locker_proto::OwnerAnswer, locker_proto::KeepaliveAnswer, locker_proto::StatusAnswer,
        locker_proto::ErrorAnswer, locker_proto::ErrorDetail, locker_proto::ClusterAnswer,
        locker_proto::Member, locker_proto::ReadyAnswer, locker_proto::HealthAnswer,
        locker_proto::DigestAnswer, locker_proto::LeaderAnswer, locker_proto::ProcessEntry,
        locker_proto::ProcessListAnswer, locker_proto::NodeView, locker_proto::NodesAnswer,
        locker_proto::AcquireRequest, locker_proto::ExtendRequest, locker_proto::ReleaseRequest,
        locker_proto::KeepaliveRequest, locker_proto::AddMemberRequest,
        locker_proto::TransferLeaderRequest,
        locker_proto::WatchEvent, locker_proto::WatchKind, locker_proto::WatchCause,
        locker_proto::EndReason, locker_proto::WatchProcess, locker_proto::EventId,
        locker_proto::WatchStart, locker_proto::WatchClosed, locker_proto::CloseReason,
        locker_proto::CompactedAnswer, locker_proto::ReadIndexAnswer,
    )),
    tags(
        (name = "locks", description = "Acquire, extend, release, read and list locks"),
        (name = "processes", description = "Client processes whose death frees their locks"),
        (name = "cluster", description = "Cluster status and membership"),
        (name = "operations", description = "Health, readiness, metrics, replica digests"),
    )
)]
/// The OpenAPI document of the client API (`ApiDoc::openapi()`), also
/// served at `/openapi.json` so clients in other languages can be generated.
pub struct ApiDoc;

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
