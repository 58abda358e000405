//! The one error body of the client API: `{"error":{"code","message"}}`,
//! answered with a 4xx or 5xx HTTP status. Lock statuses are not errors: they
//! come in a [`LockAnswer`](crate::LockAnswer) body.

use serde::{Deserialize, Serialize};

use crate::wire_enum::wire_enum;

wire_enum! {
    /// Every error code a node answers with. Each has exactly one HTTP status
    /// ([`ErrorCode::http_status`]).
    pub enum ErrorCode {
        /// 400: empty, too long, or not percent-encoded UTF-8 key or prefix, or
        /// a key with a line break (see [`crate::limits::key_problem`]).
        InvalidKey = "INVALID_KEY",
        /// 400: an owner hash that does not parse, or names another key.
        InvalidOwnerHash = "INVALID_OWNER_HASH",
        /// 400: a process hash that is not `{hostname}/{pid}.{nanoseconds}`.
        InvalidProcessHash = "INVALID_PROCESS_HASH",
        /// 400: a `ttl_ms` out of range.
        InvalidTtl = "INVALID_TTL",
        /// 400: a `wait_ms` out of range.
        InvalidWait = "INVALID_WAIT",
        /// 400: a list `limit` out of range.
        InvalidLimit = "INVALID_LIMIT",
        /// 400: a trace over 1024 bytes, with a line break, or one that would
        /// make the owner hash the node builds ambiguous (`x@h/1.2.3`).
        InvalidTrace = "INVALID_TRACE",
        /// 400: a keep-alive `info` over 16 KiB.
        InvalidInfo = "INVALID_INFO",
        /// 400: a bad or unknown query parameter.
        InvalidQuery = "INVALID_QUERY",
        /// 400: malformed JSON, wrong types, unknown or missing fields.
        InvalidJson = "INVALID_JSON",
        /// 400: membership: node id 0, an unreachable or mismatched node, a
        /// learner asked to lead.
        InvalidNode = "INVALID_NODE",
        /// 401: an operator route without the cluster secret.
        Unauthorized = "UNAUTHORIZED",
        /// 401: the node has tokens on (`--tokens-file`) and the request
        /// carries no `Authorization: Bearer <secret>`, or an unknown one.
        /// Nothing was done.
        Unauthenticated = "UNAUTHENTICATED",
        /// 403: the token lacks the role the route needs, the key lies
        /// outside its prefixes, or the process was registered by another
        /// token. Nothing was done.
        Forbidden = "FORBIDDEN",
        /// 409: an acquire by an owner hash whose run has ended (its lock was
        /// released, expired or died with its process): a late or repeated
        /// copy of an old request. Nothing was done; a new run needs a new
        /// owner hash.
        OwnerHashRetired = "OWNER_HASH_RETIRED",
        /// 404: leadership transfer to a node that is not a member.
        UnknownNode = "UNKNOWN_NODE",
        /// 404: no such route.
        NotFound = "NOT_FOUND",
        /// 405: the route does not take that method.
        MethodNotAllowed = "METHOD_NOT_ALLOWED",
        /// 410: a watch that starts before the oldest event the node still
        /// keeps (its history is bounded and starts empty at each start);
        /// the answer also carries `oldest_index` (see
        /// [`CompactedAnswer`](crate::CompactedAnswer)).
        Compacted = "COMPACTED",
        /// 413: a body over 64 KiB.
        PayloadTooLarge = "PAYLOAD_TOO_LARGE",
        /// 415: a POST or PUT with a body that is not
        /// `Content-Type: application/json` (what a cross-site form or
        /// `text/plain` request from a browser page would send).
        UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE",
        /// 421: a `Host` header the node does not answer to (DNS
        /// rebinding: a web page's own name pointed at the node's address).
        HostNotAllowed = "HOST_NOT_ALLOWED",
        /// 429: a limit of the node (`--max-locks`, `--max-processes`,
        /// `--max-waiters`) or of the token (`max_locks`) is reached.
        /// Nothing was done.
        LimitExceeded = "LIMIT_EXCEEDED",
        /// 429: the token sent more requests than its `rate_per_s`; the
        /// `Retry-After` header says when to try again. Nothing was done.
        RateLimited = "RATE_LIMITED",
        /// 500: a bug or a storage failure.
        Internal = "INTERNAL",
        /// 503: no leader could serve; nothing was proposed (a definite failure).
        NoLeader = "NO_LEADER",
        /// 503: the write was proposed but not seen committed in time: it may
        /// or may not have been applied.
        Timeout = "TIMEOUT",
        /// 503: a membership change or leadership transfer failed.
        MembershipChangeFailed = "MEMBERSHIP_CHANGE_FAILED",
        /// 400: a path with a malformed percent-escape (`%zz`) or a `.` or
        /// `..` segment (plain or percent-encoded): paths are never
        /// normalised, and a client library or proxy would rewrite such a
        /// path before it arrived.
        InvalidPath = "INVALID_PATH",
        /// 400: a request that is not well-formed HTTP/1.1 (refused by the
        /// HTTP layer before any route sees it), or one with a
        /// `Transfer-Encoding` header: bodies must be sent with
        /// `Content-Length` (both at once is a request-smuggling pattern).
        /// The connection is closed.
        MalformedRequest = "MALFORMED_REQUEST",
        /// 414: a request target longer than the HTTP layer reads.
        UriTooLong = "URI_TOO_LONG",
        /// 431: a request header section larger than the HTTP layer reads.
        HeadersTooLarge = "HEADERS_TOO_LARGE",
    }
}

impl ErrorCode {
    /// The HTTP status a node answers this code with.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidKey | InvalidOwnerHash | InvalidProcessHash | InvalidTtl | InvalidWait
            | InvalidLimit | InvalidTrace | InvalidInfo | InvalidQuery | InvalidJson
            | InvalidNode => 400,
            Unauthorized | Unauthenticated => 401,
            Forbidden => 403,
            UnknownNode | NotFound => 404,
            MethodNotAllowed => 405,
            OwnerHashRetired => 409,
            Compacted => 410,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            HostNotAllowed => 421,
            LimitExceeded | RateLimited => 429,
            Internal => 500,
            NoLeader | Timeout | MembershipChangeFailed => 503,
            // The HTTP layer's own refusals.
            InvalidPath | MalformedRequest => 400,
            UriTooLong => 414,
            HeadersTooLarge => 431,
        }
    }

    /// Whether the same request may succeed later (every 503, which also
    /// carries `Retry-After`).
    pub fn is_retryable(self) -> bool {
        self.http_status() == 503
    }

    /// Whether the request certainly changed nothing: every 4xx, and
    /// `NO_LEADER`. `TIMEOUT`, `INTERNAL` and `MEMBERSHIP_CHANGE_FAILED` may
    /// come after something was proposed, so their outcome is unknown.
    pub fn nothing_was_done(self) -> bool {
        !matches!(
            self,
            ErrorCode::Timeout | ErrorCode::Internal | ErrorCode::MembershipChangeFailed
        )
    }
}

/// The body of every refusal that is not a lock status.
///
/// ```
/// let body = r#"{"error":{"code":"NO_LEADER","message":"no leader"}}"#;
/// let e: locker_proto::ErrorAnswer = serde_json::from_str(body).unwrap();
/// assert_eq!(e.error.code, locker_proto::ErrorCode::NoLeader);
/// assert_eq!(e.error.code.http_status(), 503);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorAnswer {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The code and human text of an [`ErrorAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Machine-readable.
    pub code: ErrorCode,
    /// For humans; its wording is not part of the contract.
    pub message: String,
}

impl ErrorAnswer {
    /// An error body with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorAnswer {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}
