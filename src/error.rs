//! The one error type of the API and its two mappings: to `tonic::Status`
//! (every transport goes through it) and from a gRPC code to an HTTP status
//! (the gateway's single translation table).

use http::StatusCode;
use tonic::Code;

use crate::store::StoreError;

/// Everything a request can fail with, as the caller is to see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No, malformed, unknown, revoked or expired credentials, or a disabled user.
    #[error("Missing or invalid access token")]
    Unauthenticated,
    /// The request itself is wrong; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// Nothing the caller may see has this id.
    #[error("{0}")]
    NotFound(String),
    /// The target exists but is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller is known but not allowed.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request collides with an earlier one (an idempotency key reused
    /// for a different request).
    #[error("{0}")]
    AlreadyExists(String),
    /// The service is not set up for this (no model provider configured).
    #[error("{0}")]
    Unimplemented(String),
    /// The model provider failed; the message says how, without its secrets.
    /// gRPC UNAVAILABLE, HTTP 502 (the gateway reads [`UPSTREAM`]).
    #[error("{0}")]
    Upstream(String),
    /// The model provider did not answer in time (gRPC DEADLINE_EXCEEDED, HTTP 504).
    #[error("{0}")]
    UpstreamTimeout(String),
    /// The database cannot be reached or is saturated; retrying later may work.
    #[error("Service temporarily unavailable")]
    Unavailable { detail: String },
    /// Anything else. `public` is all the caller sees; `detail` goes to the log.
    #[error("{public}")]
    Internal {
        public: &'static str,
        detail: String,
    },
}

impl ApiError {
    /// Turns a store failure into what the caller may see: 503 for an
    /// unreachable database, else a 500 saying only `public`.
    pub fn from_store(public: &'static str) -> impl FnOnce(StoreError) -> ApiError {
        move |e| match e {
            StoreError::Unavailable(detail) => ApiError::Unavailable { detail },
            other => ApiError::Internal {
                public,
                detail: other.to_string(),
            },
        }
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            ApiError::Unauthenticated => Code::Unauthenticated,
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::Unimplemented(_) => Code::Unimplemented,
            ApiError::Upstream(_) => Code::Unavailable,
            ApiError::UpstreamTimeout(_) => Code::DeadlineExceeded,
            ApiError::Unavailable { .. } => Code::Unavailable,
            ApiError::Internal { .. } => Code::Internal,
        }
    }
}

impl From<ApiError> for tonic::Status {
    /// The caller gets the public message only; internal detail is logged here,
    /// the one place every failure passes.
    fn from(e: ApiError) -> Self {
        match &e {
            ApiError::Unavailable { detail } => {
                tracing::warn!(error = %detail, "database unavailable")
            }
            ApiError::Internal { detail, .. } => tracing::error!(error = %detail, "internal error"),
            _ => {}
        }
        let mut status = tonic::Status::new(e.code(), e.to_string());
        if matches!(e, ApiError::Upstream(_)) {
            status.metadata_mut().insert(
                UPSTREAM,
                tonic::metadata::MetadataValue::from_static("provider"),
            );
        }
        status
    }
}

/// Metadata on a status that an upstream (the model provider), not this
/// service, failed: the gateway answers 502 Bad Gateway for it.
pub const UPSTREAM: &str = "x-upstream-error";

/// The HTTP status of a service error: the code table, except 502 for an
/// upstream failure.
pub fn http_status_of(status: &tonic::Status) -> StatusCode {
    if status.metadata().get(UPSTREAM).is_some() {
        StatusCode::BAD_GATEWAY
    } else {
        http_status(status.code())
    }
}

/// The HTTP status of a gRPC code: the grpc-gateway / Envoy table, the only
/// place where a `Status` becomes HTTP.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_error_has_its_code_status_and_message() {
        let cases = [
            (
                ApiError::Unauthenticated,
                Code::Unauthenticated,
                401,
                "Missing or invalid access token",
            ),
            (
                ApiError::InvalidArgument("repoId must be a UUID".into()),
                Code::InvalidArgument,
                400,
                "repoId must be a UUID",
            ),
            (
                ApiError::NotFound("Repository not found".into()),
                Code::NotFound,
                404,
                "Repository not found",
            ),
            (
                ApiError::FailedPrecondition("orphaned".into()),
                Code::FailedPrecondition,
                400,
                "orphaned",
            ),
            (
                ApiError::PermissionDenied("no".into()),
                Code::PermissionDenied,
                403,
                "no",
            ),
            (
                ApiError::AlreadyExists("used".into()),
                Code::AlreadyExists,
                409,
                "used",
            ),
            (
                ApiError::Unavailable {
                    detail: "connection refused to 10.0.0.1".into(),
                },
                Code::Unavailable,
                503,
                "Service temporarily unavailable",
            ),
            (
                ApiError::Internal {
                    public: "Failed to create conversation",
                    detail: "no such table: x".into(),
                },
                Code::Internal,
                500,
                "Failed to create conversation",
            ),
        ];
        for (error, code, http, message) in cases {
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
            assert_eq!(http_status(status.code()).as_u16(), http);
        }
    }

    #[test]
    fn the_code_table_matches_grpc_gateway() {
        let table = [
            (Code::Ok, 200),
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Unknown, 500),
            (Code::Internal, 500),
            (Code::DataLoss, 500),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn store_failures_hide_their_detail() {
        let e = ApiError::from_store("Failed to create conversation")(StoreError::Internal(
            "syntax error near SELECT".into(),
        ));
        assert_eq!(e.to_string(), "Failed to create conversation");
        let e = ApiError::from_store("x")(StoreError::Unavailable("pool timed out".into()));
        assert_eq!(e.code(), Code::Unavailable);
        assert_eq!(e.to_string(), "Service temporarily unavailable");
    }
}
