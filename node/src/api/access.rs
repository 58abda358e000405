//! Authentication and authorization of client requests when the node has
//! tokens (`--tokens-file`), on the node that received the request, before
//! it is forwarded anywhere: 401 `UNAUTHENTICATED` without a known token,
//! 403 `FORBIDDEN` without the role or outside the token's prefixes, 429
//! `RATE_LIMITED` past its rate. The probes stay open. The leader checks a
//! forwarded request again (the token travels with it) but does not charge
//! its rate twice; the forwarding mark itself grants nothing.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use locker_proto::ErrorCode;

use super::error::ApiError;
use crate::node::Node;
use crate::tokens::{Role, Token};

/// The token a request was authenticated with, for the handlers (list
/// filtering, the caller of a proposed op). Absent when tokens are off.
#[derive(Clone)]
pub struct Authed(pub Arc<Token>);

/// The token of a request, from the handler's optional [`Authed`].
pub fn token_of(a: &Option<axum::Extension<Authed>>) -> Option<&Token> {
    a.as_ref().map(|axum::Extension(Authed(t))| t.as_ref())
}

/// What a route asks of a token.
enum Need {
    /// Any valid token, or the cluster secret without a token (a peer
    /// forming the cluster asks for its view).
    Any,
    /// A role, and for key routes the key, which must be under a prefix.
    Role(Role, Option<String>),
    /// An operator route (membership, leadership): the admin role, or, with
    /// no token at all, the cluster secret (peers forming the cluster).
    Operator,
}

/// The token of `Authorization: Bearer <secret>`, if the header is there.
fn bearer(h: &HeaderMap) -> Option<&[u8]> {
    let v = h.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

fn forbidden(why: impl Into<String>) -> Response {
    ApiError::new(ErrorCode::Forbidden, why).into_response()
}

/// Middleware on the client port (see the module doc).
pub async fn check_access(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let Some(tokens) = node.tokens.current() else {
        return next.run(req).await;
    };
    if matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let need = match need(&mut parts).await {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let token = bearer(&parts.headers).and_then(|s| tokens.find(s));
    let Some(token) = token else {
        let has_auth = parts.headers.contains_key(header::AUTHORIZATION);
        let peer_route = matches!(need, Need::Operator | Need::Any);
        if peer_route && !has_auth && super::cluster::has_secret(&node, &parts.headers) {
            return next.run(Request::from_parts(parts, body)).await;
        }
        let why = if has_auth {
            "unknown token: nothing was done"
        } else {
            "this node requires a token: send Authorization: Bearer <secret>"
        };
        return ApiError::new(ErrorCode::Unauthenticated, why).into_response();
    };
    match need {
        Need::Any => {}
        Need::Operator if !token.has(Role::Admin) => {
            return forbidden(format!("token {:?} lacks the admin role", token.name))
        }
        Need::Operator => {}
        Need::Role(role, key) => {
            if !token.has(role) {
                return forbidden(format!(
                    "token {:?} lacks the {} role",
                    token.name,
                    role.as_str()
                ));
            }
            if let Some(key) = key.filter(|k| !token.covers(k)) {
                return forbidden(format!(
                    "key {key:?} is outside the prefixes of token {:?}",
                    token.name
                ));
            }
        }
    }
    // A forwarded request was charged on the node that received it.
    if !super::forward::forwarded_by_peer(&node, &parts.headers) {
        if let Err(wait) = node.tokens.take(&token) {
            return rate_limited(&token, wait);
        }
    }
    parts.extensions.insert(Authed(token));
    next.run(Request::from_parts(parts, body)).await
}

fn rate_limited(token: &Token, wait: std::time::Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut resp = ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "token {:?} sent more than its {} requests per second: nothing was done",
            token.name,
            token.rate_per_s.unwrap_or_default()
        ),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The route's one path parameter, percent-decoded as the handler reads it.
async fn path_param(parts: &mut Parts, code: ErrorCode) -> Result<String, ApiError> {
    match Path::<String>::from_request_parts(parts, &()).await {
        Ok(Path(k)) => Ok(k),
        Err(e) => Err(ApiError::new(
            code,
            format!("the path parameter is not valid percent-encoded UTF-8: {e}"),
        )),
    }
}

/// What the matched route asks of a token. A route this table does not
/// know needs the admin role, so a route added later is closed until it
/// is placed here.
async fn need(parts: &mut Parts) -> Result<Need, ApiError> {
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let get = parts.method == Method::GET;
    let Some(route) = route else {
        // Unknown routes answer 404 to any token.
        return Ok(Need::Any);
    };
    Ok(match route.as_str() {
        "/v1/locks/{key}/acquire" | "/v1/locks/{key}/extend" | "/v1/locks/{key}/release" => {
            Need::Role(
                Role::Write,
                Some(path_param(parts, ErrorCode::InvalidKey).await?),
            )
        }
        "/v1/locks/{key}" => Need::Role(
            Role::Read,
            Some(path_param(parts, ErrorCode::InvalidKey).await?),
        ),
        // Filtered by the handler.
        "/v1/locks" | "/v1/watch" => Need::Role(Role::Read, None),
        // An index only; a follower asks its leader with the secret.
        "/v1/read-index" if get => Need::Any,
        "/v1/owners/{owner_hash}" => {
            let owner = path_param(parts, ErrorCode::InvalidOwnerHash).await?;
            // A hash that does not parse names no key: its answer shows none.
            let k = locker_proto::parse_owner_hash(&owner).map(|p| p.key.to_string());
            Need::Role(Role::Read, k)
        }
        // Whose process it is, the replicated table decides.
        "/v1/processes/{process_hash}" => Need::Role(Role::Write, None),
        // Filtered by the handler: the token's own processes.
        "/v1/processes" if get => Need::Role(Role::Read, None),
        "/v1/cluster" | "/v1/cluster/nodes" | "/v1/digest" | "/openapi.json" if get => Need::Any,
        // The whole table, every tenant's keys: administrators only.
        "/v1/backup" => Need::Operator,
        _ => Need::Operator,
    })
}
