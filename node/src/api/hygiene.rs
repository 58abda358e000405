//! HTTP hygiene of the client port: the request's framing and path are
//! checked before any route sees them, and every refusal, whoever made it,
//! leaves as the one JSON error shape.
//!
//! * A request with `Transfer-Encoding` is refused (`400 MALFORMED_REQUEST`,
//!   connection closed). Bodies here are small JSON documents sent with
//!   `Content-Length`; with both headers a front proxy and this node could
//!   disagree on where the request ends (request smuggling). hyper drops the
//!   `Content-Length` of such a request before the router sees it, so the
//!   only rule that catches "both" is to refuse `Transfer-Encoding` itself.
//! * Paths are never normalised: a malformed percent-escape (`%zz`) or a `.`
//!   or `..` segment, plain or percent-encoded, is `400 INVALID_PATH` (a
//!   client library or proxy would have rewritten it, so the node would
//!   act on another path than the one its sender meant). `//v1/locks` and
//!   other paths with empty segments match no route (`404 NOT_FOUND`);
//!   `%2F` inside a segment is a slash of the key, never a separator.
//! * A body declared larger than the limit (64 KiB) is refused at once
//!   (`413 PAYLOAD_TOO_LARGE`, connection closed), without waiting for it.
//! * A 4xx answered without a JSON body (an axum rejection no handler turned
//!   into an [`ApiError`]) gets one, with the code of its status.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use locker_proto::limits::MAX_BODY_BYTES;
use locker_proto::ErrorCode;

use super::error::ApiError;

/// Refuses `Transfer-Encoding` and paths a proxy or client would rewrite.
pub async fn check_request(req: Request, next: Next) -> Response {
    if req.headers().contains_key(header::TRANSFER_ENCODING) {
        let mut resp = ApiError::new(
            ErrorCode::MalformedRequest,
            "send the body with Content-Length: Transfer-Encoding is not accepted",
        )
        .into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        // Refused before a byte of it is read (a client may not send it
        // at all and wait).
        let mut resp = ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    if let Some(why) = path_problem(req.uri().path()) {
        return ApiError::new(ErrorCode::InvalidPath, why).into_response();
    }
    next.run(req).await
}

/// Why a raw (still percent-encoded) path cannot be served as sent, if it
/// cannot: a `%` not followed by two hex digits, or a segment that is `.`
/// or `..` once decoded.
pub fn path_problem(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Some(format!(
                    "the path has a malformed percent-escape at byte {i}: '%' must be followed by two hex digits"
                ));
            }
        }
    }
    path.split('/').find_map(|segment| {
        let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        matches!(decoded.as_slice(), b"." | b"..").then(|| {
            format!(
                "the path has a {segment:?} segment; paths are not normalised (percent-encode a key's dots as part of a longer key, or choose another key)"
            )
        })
    })
}

/// Gives every 4xx answer without a JSON body one: `{"error":{"code",
/// "message"}}` with the code of its status (an unknown 4xx becomes
/// `400 MALFORMED_REQUEST`).
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if !resp.status().is_client_error() || is_json(&resp) {
        return resp;
    }
    let status = resp.status();
    let mut json = ApiError::new(
        code_of(status),
        format!(
            "the request was refused: {}",
            status.canonical_reason().unwrap_or("a client error")
        ),
    )
    .into_response();
    for name in [header::CONNECTION, header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = resp.headers().get(&name) {
            json.headers_mut().insert(name, v.clone());
        }
    }
    json
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The error code a bare refusal of this status stands for.
pub fn code_of(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::URI_TOO_LONG => ErrorCode::UriTooLong,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeadersTooLarge,
        _ => ErrorCode::MalformedRequest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_a_proxy_would_rewrite_are_refused() {
        for bad in [
            "/v1/locks/../cluster",
            "/v1/locks/..",
            "/v1/locks/.",
            "/v1/locks/%2e%2E",
            "/v1/locks/.%2e/acquire",
            "/v1/locks/%zz",
            "/v1/locks/a%2",
            "/v1/locks/a%",
            "/./healthz",
        ] {
            assert!(path_problem(bad).is_some(), "{bad} must be refused");
        }
        for good in [
            "/v1/locks/a%2Fb",
            "/v1/locks/a%2F..%2Fb",
            "/v1/locks/...",
            "/v1/locks/.hidden",
            "/v1/locks/%25zz",
            "//v1/locks",
            "/v1/locks/",
            "/",
        ] {
            assert_eq!(path_problem(good), None, "{good} is a path as sent");
        }
    }

    #[test]
    fn every_bare_refusal_has_a_code_of_its_own_status() {
        for s in 400..500u16 {
            let Ok(status) = StatusCode::from_u16(s) else {
                continue;
            };
            let code = code_of(status);
            if code != ErrorCode::MalformedRequest {
                assert_eq!(code.http_status(), s, "{code:?}");
            }
        }
    }
}
