//! The one error shape of the client API: `{"error":{"code","message"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::node::Unavailable;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Nothing was done and another node leads: the routing layer may send
    /// the request there (see `forward::route_to_leader`).
    pub leader_elsewhere: bool,
}

/// Response extension set on answers of [`ApiError::leader_elsewhere`].
#[derive(Debug, Clone, Copy)]
pub struct LeaderElsewhere;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            leader_elsewhere: false,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", message)
    }
}

impl From<Unavailable> for ApiError {
    fn from(u: Unavailable) -> Self {
        let code = match u {
            Unavailable::NoLeader(_) | Unavailable::LeaderElsewhere(_) => "NO_LEADER",
            Unavailable::Unknown(_) => "TIMEOUT",
        };
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, u.to_string());
        e.leader_elsewhere = matches!(u, Unavailable::LeaderElsewhere(_));
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = super::answers::ErrorAnswer {
            error: super::answers::ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.leader_elsewhere {
            resp.extensions_mut().insert(LeaderElsewhere);
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 is retryable; say when.
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
