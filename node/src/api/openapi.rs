//! The OpenAPI document, generated from the handlers' annotations and the
//! answer types they really send, served at `/openapi.json`.

use axum::Json;
use utoipa::OpenApi;

use super::{answers, cluster, locks, ops, processes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Locker",
        description = "A clustered lock service for singleton jobs. Every node serves every route; followers forward to the leader. Reads are linearizable unless `?stale=true`.",
    ),
    paths(
        processes::keepalive, processes::end,
        locks::acquire, locks::extend, locks::release, locks::read, locks::list, locks::owner,
        cluster::status, cluster::add_member, cluster::remove_member, cluster::transfer_leader,
        ops::healthz, ops::readyz, ops::metrics, ops::digest,
    ),
    components(schemas(
        crate::core::Lock, crate::core::Status,
        answers::LockAnswer, answers::ReadAnswer, answers::ListAnswer, answers::OwnerAnswer,
        answers::KeepaliveAnswer, answers::StatusAnswer, answers::ErrorAnswer, answers::ErrorDetail,
        answers::ClusterAnswer, answers::Member, answers::ReadyAnswer, answers::DigestAnswer, answers::LeaderAnswer,
        locks::AcquireBody, locks::ExtendBody, locks::ReleaseBody, processes::KeepaliveBody, cluster::AddMember, cluster::TransferLeader,
    )),
    tags(
        (name = "locks", description = "Acquire, extend, release, read and list locks"),
        (name = "processes", description = "Client processes whose death frees their locks"),
        (name = "cluster", description = "Cluster status and membership"),
        (name = "operations", description = "Health, readiness, metrics, replica digests"),
    )
)]
pub struct ApiDoc;

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
