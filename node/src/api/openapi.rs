//! The OpenAPI document, served at `/openapi.json`: paths from the handlers'
//! annotations, schemas from the `locker-proto` types the handlers really
//! parse and send (its `openapi` feature derives them), so the document
//! cannot drift from the wire.
//!
//! The document also carries every bound the node enforces on input (the
//! `locker_proto::schemas` of the request fields and of the path parameters
//! below, built from `locker_proto::limits`) and every status each operation
//! can answer, with the error codes each status carries
//! (`x-locker-error-codes`, checked against [`ErrorCode::http_status`]).
//! The statuses every route shares (the HTTP layer's refusals, tokens, the
//! Host check) are added by [`HttpLayer`]; `tests/tests/api_openapi_props.rs`
//! checks the whole against a running node.

use axum::Json;
use locker_proto::ErrorCode;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::OneOfBuilder;
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoParams, Modify, OpenApi};

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
    modifiers(&HttpLayer),
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

/// The extension of a response listing the error codes it can carry.
pub const ERROR_CODES_EXT: &str = "x-locker-error-codes";

/// The wire words of `codes`, for a response's [`ERROR_CODES_EXT`].
pub fn codes(codes: &[ErrorCode]) -> Vec<&'static str> {
    codes.iter().map(|c| c.as_str()).collect()
}

/// The `{key}` of the lock routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only its schema is used
pub struct KeyPath {
    /// The lock's key, percent-encoded.
    #[param(schema_with = locker_proto::schemas::key, required = true)]
    key: String,
}

/// The `{process_hash}` of the process routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only its schema is used
pub struct ProcessHashPath {
    /// `{hostname}/{pid}.{nanoseconds}`, percent-encoded.
    #[param(schema_with = locker_proto::schemas::process_hash_path, required = true)]
    process_hash: String,
}

/// The `{owner_hash}` of the owner query.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // only its schema is used
pub struct OwnerHashPath {
    /// The owner hash, percent-encoded.
    #[param(schema_with = locker_proto::schemas::owner_hash_path, required = true)]
    owner_hash: String,
}

/// Adds to every operation the statuses no handler decides: the HTTP
/// layer's refusals (`hygiene.rs`, hyper's limits, the body limit), the
/// Host check, the JSON content type of bodies, the token check (401, and
/// 429 past a token's rate), and 500. Every 429 and 503 gets its
/// `Retry-After` header.
pub struct HttpLayer;

impl Modify for HttpLayer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let probe = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
            let ops = [
                (&mut item.get, false),
                (&mut item.delete, false),
                (&mut item.post, true),
                (&mut item.put, true),
            ];
            for (op, has_body) in ops {
                let Some(op) = op.as_mut() else { continue };
                shared_refusals(op, has_body, probe);
                for (status, r) in op.responses.responses.iter_mut() {
                    if let RefOr::T(r) = r {
                        or_error_body(r);
                        retry_after(status, r);
                    }
                }
            }
        }
    }
}

/// The refusals every route shares (`probe`: one of the open probes, which
/// neither tokens nor the Host check reach).
fn shared_refusals(op: &mut Operation, has_body: bool, probe: bool) {
    use ErrorCode::*;
    add(op, 400, &[InvalidPath, MalformedRequest], "a path with a `.`/`..` segment or a bad percent-escape (INVALID_PATH); a request the HTTP layer cannot read or one with Transfer-Encoding (MALFORMED_REQUEST)");
    add(
        op,
        413,
        &[PayloadTooLarge],
        "PAYLOAD_TOO_LARGE: a body over 64 KiB",
    );
    add(
        op,
        414,
        &[UriTooLong],
        "URI_TOO_LONG: a request target over 64 KiB",
    );
    add(
        op,
        431,
        &[HeadersTooLarge],
        "HEADERS_TOO_LARGE: a header section over the HTTP layer's buffer",
    );
    add(op, 500, &[Internal], "INTERNAL: a bug or a storage failure");
    if has_body {
        add(
            op,
            415,
            &[UnsupportedMediaType],
            "UNSUPPORTED_MEDIA_TYPE: a body not sent as `Content-Type: application/json`",
        );
    }
    let path_param = op
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path));
    if path_param {
        add(
            op,
            404,
            &[NotFound],
            "NOT_FOUND: an empty path parameter matches no route",
        );
    }
    if !probe {
        add(
            op,
            401,
            &[Unauthenticated],
            "UNAUTHENTICATED (tokens on): no known `Authorization: Bearer` token",
        );
        add(
            op,
            421,
            &[HostNotAllowed],
            "HOST_NOT_ALLOWED: a `Host` the node does not answer to (`--allowed-hosts`)",
        );
        add(
            op,
            429,
            &[RateLimited],
            "RATE_LIMITED (tokens on): the token's `rate_per_s` is spent",
        );
    }
}

/// Every 503 error carries `Retry-After`, and so does a 429 `RATE_LIMITED`.
fn retry_after(status: &str, r: &mut utoipa::openapi::response::Response) {
    let is_error = r
        .extensions
        .as_ref()
        .is_some_and(|e| e.contains_key(ERROR_CODES_EXT));
    let when = match status {
        "503" => "every 503 error",
        "429" => "RATE_LIMITED",
        _ => return,
    };
    if is_error {
        r.headers.insert(
            "Retry-After".to_string(),
            HeaderBuilder::new()
                .schema(<u64 as utoipa::PartialSchema>::schema())
                .description(Some(format!(
                    "Seconds to wait before trying again ({when})"
                )))
                .build(),
        );
    }
}

/// A response listing error codes whose body is another answer (a lock
/// status with 404 or 409) has either body: `oneOf` the two.
fn or_error_body(r: &mut utoipa::openapi::response::Response) {
    let error = Ref::from_schema_name("ErrorAnswer");
    let has_codes = r
        .extensions
        .as_ref()
        .is_some_and(|e| e.contains_key(ERROR_CODES_EXT));
    let Some(content) = r.content.get_mut("application/json") else {
        return;
    };
    let Some(RefOr::Ref(other)) = content.schema.as_ref() else {
        return;
    };
    if !has_codes || *other == error {
        return;
    }
    let either = OneOfBuilder::new()
        .item(RefOr::Ref(other.clone()))
        .item(RefOr::Ref(error))
        .build();
    content.schema = Some(RefOr::T(utoipa::openapi::schema::Schema::OneOf(either)));
}

/// Adds `codes` to the operation's `status` response (creating it, with
/// the error body, when the handler did not list that status).
fn add(op: &mut Operation, status: u16, new: &[ErrorCode], why: &str) {
    let key = status.to_string();
    let entry = op.responses.responses.entry(key).or_insert_with(|| {
        ResponseBuilder::new()
            .description("")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorAnswer")))
                    .build(),
            )
            .build()
            .into()
    });
    let RefOr::T(r) = entry else { return };
    r.description = if r.description.is_empty() {
        why.to_string()
    } else {
        format!("{}; {why}", r.description)
    };
    let ext = r.extensions.get_or_insert_with(Extensions::default);
    let list = ext
        .entry(ERROR_CODES_EXT.to_string())
        .or_insert_with(|| serde_json::json!([]));
    if let Some(list) = list.as_array_mut() {
        for c in codes(new) {
            if !list.iter().any(|v| v == c) {
                list.push(c.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use locker_proto::limits;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::to_value(ApiDoc::openapi()).expect("the document serialises")
    }

    /// Every error code a response lists is answered with that status.
    #[test]
    fn error_codes_match_their_statuses() {
        let doc = doc();
        let mut seen = 0;
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                for (status, resp) in op["responses"].as_object().expect("responses") {
                    let status: u16 = status.parse().expect("numeric status");
                    let error_body = resp["content"]["application/json"]["schema"]["$ref"]
                        == "#/components/schemas/ErrorAnswer";
                    let Some(list) = resp.get(ERROR_CODES_EXT) else {
                        assert!(!error_body, "{method} {path} {status} lists no error code");
                        continue;
                    };
                    for code in list.as_array().expect("a list") {
                        let word = code.as_str().expect("a word");
                        let c: ErrorCode = word.parse().expect("a known error code");
                        assert_eq!(c.http_status(), status, "{method} {path}: {word}");
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen > 100, "only {seen} codes listed");
    }

    /// The bounds in the document are the constants the node enforces.
    #[test]
    fn bounds_are_the_enforced_constants() {
        let doc = doc();
        let s = &doc["components"]["schemas"];
        let range = |v: &Value| (v["minimum"].as_u64(), v["maximum"].as_u64());
        let acquire = &s["AcquireRequest"]["properties"];
        let lock_ttl = (
            Some(*limits::LOCK_TTL_MS.start()),
            Some(*limits::LOCK_TTL_MS.end()),
        );
        assert_eq!(range(&acquire["ttl_ms"]), lock_ttl);
        assert_eq!(range(&s["ExtendRequest"]["properties"]["ttl_ms"]), lock_ttl);
        assert_eq!(
            range(&acquire["wait_ms"]),
            (Some(*limits::WAIT_MS.start()), Some(*limits::WAIT_MS.end()))
        );
        assert_eq!(
            range(&s["KeepaliveRequest"]["properties"]["ttl_ms"]),
            (
                Some(*limits::PROCESS_TTL_MS.start()),
                Some(*limits::PROCESS_TTL_MS.end())
            )
        );
        assert_eq!(
            acquire["trace"]["maxLength"].as_u64(),
            Some(limits::MAX_TRACE_BYTES as u64)
        );
        let params = &doc["paths"]["/v1/locks"]["get"]["parameters"];
        let limit = params
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "limit"))
            .expect("limit parameter");
        assert_eq!(
            range(&limit["schema"]),
            (
                Some(*limits::LIST_LIMIT.start() as u64),
                Some(*limits::LIST_LIMIT.end() as u64)
            )
        );
        let key = &doc["paths"]["/v1/locks/{key}"]["get"]["parameters"][0];
        assert_eq!(key["name"], "key");
        assert_eq!(
            key["schema"]["maxLength"].as_u64(),
            Some(limits::MAX_KEY_BYTES as u64)
        );
        assert_eq!(key["schema"]["minLength"].as_u64(), Some(1));
    }
}
