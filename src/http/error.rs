//! The one place an [`ApiError`] becomes an HTTP response, and the JSON error
//! body every failure (the framework's own rejections included) carries:
//! `{"success": false, "message": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;

/// Every error, whatever its status.
#[derive(Serialize, ToSchema)]
pub struct ErrorReply {
    /// Always `false`.
    pub success: bool,
    /// What went wrong, for people; never internals.
    pub message: String,
}

/// The HTTP status of each error (the grpc-gateway table for the codes the
/// gRPC adapter gives them, and 502 for a failing model provider).
fn status_of(e: &ApiError) -> StatusCode {
    match e {
        ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
        ApiError::InvalidArgument(_) | ApiError::FailedPrecondition(_) => StatusCode::BAD_REQUEST,
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        ApiError::AlreadyExists(_) => StatusCode::CONFLICT,
        ApiError::Unimplemented(_) => StatusCode::NOT_IMPLEMENTED,
        ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
        ApiError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        ApiError::Unavailable { .. } | ApiError::DependencyUnavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ApiError::ResourceExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
        ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    /// The caller gets the public message only; the detail is logged.
    fn into_response(self) -> Response {
        self.log();
        let mut response = error_response(status_of(&self), &self.to_string());
        if let ApiError::ResourceExhausted {
            retry_after_secs, ..
        } = &self
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, (*retry_after_secs).into());
        }
        response
    }
}

/// `{"success": false, "message": ...}` with the given status.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(ErrorReply {
            success: false,
            message: message.to_owned(),
        }),
    )
        .into_response()
}

/// The errors every API route may answer, besides its own (a route may
/// describe one of them more closely after this list).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ApiErrors {
    #[response(status = 401, description = "Missing or invalid access token")]
    Unauthenticated(ErrorReply),
    #[response(status = 500, description = "Internal error")]
    Internal(ErrorReply),
    #[response(
        status = 503,
        description = "Database unavailable, or too many requests in flight (with Retry-After)"
    )]
    Unavailable(ErrorReply),
    #[response(status = 504, description = "Request timed out")]
    Timeout(ErrorReply),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_api_error_has_its_status_and_public_message() {
        let cases = [
            (
                ApiError::Unauthenticated,
                401,
                "Missing or invalid access token",
            ),
            (
                ApiError::InvalidArgument("repoId must be a UUID".into()),
                400,
                "repoId must be a UUID",
            ),
            (
                ApiError::NotFound("Repository not found".into()),
                404,
                "Repository not found",
            ),
            (
                ApiError::FailedPrecondition("orphaned".into()),
                400,
                "orphaned",
            ),
            (ApiError::PermissionDenied("no".into()), 403, "no"),
            (ApiError::AlreadyExists("used".into()), 409, "used"),
            (
                ApiError::Unimplemented("no provider".into()),
                501,
                "no provider",
            ),
            (ApiError::Upstream("failed".into()), 502, "failed"),
            (ApiError::UpstreamTimeout("late".into()), 504, "late"),
            (
                ApiError::DependencyUnavailable("Policy evaluation unavailable".into()),
                503,
                "Policy evaluation unavailable",
            ),
            (
                ApiError::ResourceExhausted {
                    message: "spent".into(),
                    retry_after_secs: 60,
                },
                429,
                "spent",
            ),
            (
                ApiError::Unavailable {
                    detail: "connection refused to 10.0.0.1".into(),
                },
                503,
                "Service temporarily unavailable",
            ),
            (
                ApiError::Internal {
                    public: "Failed to create conversation",
                    detail: "no such table: x".into(),
                },
                500,
                "Failed to create conversation",
            ),
        ];
        for (error, status, message) in cases {
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status, "{message}");
            assert_eq!(
                response.headers()["content-type"],
                "application/json",
                "{message}"
            );
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .expect("body");
            let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(
                body,
                serde_json::json!({"success": false, "message": message})
            );
        }
    }
}
