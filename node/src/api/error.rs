//! The one error shape of the client API: `{"error":{"code","message"}}`,
//! with the HTTP status that `locker-proto` assigns to each [`ErrorCode`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use locker_proto::{ErrorAnswer, ErrorCode};

use crate::node::Unavailable;

/// A refusal on its way to the client. The HTTP status is not stored: it is
/// derived from `code`, so a code can never travel with the wrong status.
#[derive(Debug)]
pub struct ApiError {
    /// What went wrong, machine-readable; decides the HTTP status.
    pub code: ErrorCode,
    /// For humans: names the problem so a caller can fix the request.
    pub message: String,
    /// Nothing was done and another node leads: the routing layer may send
    /// the request there (see `forward::route_to_leader`).
    pub leader_elsewhere: bool,
}

/// Response extension set on answers of [`ApiError::leader_elsewhere`].
#[derive(Debug, Clone, Copy)]
pub struct LeaderElsewhere;

impl ApiError {
    /// A refusal with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            leader_elsewhere: false,
        }
    }

    /// A bug or a storage failure (`500 INTERNAL`).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The HTTP status of this refusal.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<Unavailable> for ApiError {
    fn from(u: Unavailable) -> Self {
        let code = match u {
            Unavailable::NoLeader(_) | Unavailable::LeaderElsewhere(_) => ErrorCode::NoLeader,
            Unavailable::Unknown(_) => ErrorCode::Timeout,
        };
        let mut e = ApiError::new(code, u.to_string());
        e.leader_elsewhere = matches!(u, Unavailable::LeaderElsewhere(_));
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retryable = self.code.is_retryable();
        let leader_elsewhere = self.leader_elsewhere;
        let mut resp = (status, Json(ErrorAnswer::new(self.code, self.message))).into_response();
        if leader_elsewhere {
            resp.extensions_mut().insert(LeaderElsewhere);
        }
        if retryable {
            // Every 503 is retryable; say when.
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
