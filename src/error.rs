//! The one error type of the API. Each adapter maps it once: to
//! `tonic::Status` in `crate::grpc::status`, to an HTTP response in
//! `crate::http::error`.

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
    /// The model provider failed; the message says how, without its secrets
    /// (gRPC UNAVAILABLE, HTTP 502).
    #[error("{0}")]
    Upstream(String),
    /// The model provider did not answer in time (gRPC DEADLINE_EXCEEDED, HTTP 504).
    #[error("{0}")]
    UpstreamTimeout(String),
    /// Something the operation depends on (other than the database and the
    /// model provider) cannot answer now, such as the policy judge; the
    /// message says what (gRPC UNAVAILABLE, HTTP 503).
    #[error("{0}")]
    DependencyUnavailable(String),
    /// The database cannot be reached or is saturated; retrying later may work.
    /// A budget has no room for the request: the caller may retry after
    /// `retry_after_secs` (when the budget's period ends).
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        retry_after_secs: u64,
    },
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

    /// A not-found as `with` says it (the resource the caller asked for,
    /// rather than the one a rule looked up); other errors unchanged, so an
    /// unavailable database is never passed off as "not found".
    pub fn or_not_found(self, with: impl FnOnce() -> ApiError) -> ApiError {
        match self {
            ApiError::NotFound(_) => with(),
            other => other,
        }
    }

    /// The variant's name, which with the message [`ApiError::relayed`]
    /// turns back into the error (a resumed stream's logged error).
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::InvalidArgument(_) => "invalid_argument",
            ApiError::NotFound(_) => "not_found",
            ApiError::FailedPrecondition(_) => "failed_precondition",
            ApiError::PermissionDenied(_) => "permission_denied",
            ApiError::AlreadyExists(_) => "already_exists",
            ApiError::Unimplemented(_) => "unimplemented",
            ApiError::Upstream(_) => "upstream",
            ApiError::UpstreamTimeout(_) => "upstream_timeout",
            ApiError::DependencyUnavailable(_) => "dependency_unavailable",
            ApiError::ResourceExhausted { .. } => "resource_exhausted",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal { .. } => "internal",
        }
    }

    /// The error [`ApiError::kind`] named, saying what it said (an internal
    /// error says only that the prompt failed; its detail was logged where
    /// it happened).
    pub fn relayed(kind: &str, message: String) -> ApiError {
        match kind {
            "unauthenticated" => ApiError::Unauthenticated,
            "invalid_argument" => ApiError::InvalidArgument(message),
            "not_found" => ApiError::NotFound(message),
            "failed_precondition" => ApiError::FailedPrecondition(message),
            "permission_denied" => ApiError::PermissionDenied(message),
            "already_exists" => ApiError::AlreadyExists(message),
            "unimplemented" => ApiError::Unimplemented(message),
            "upstream" => ApiError::Upstream(message),
            "upstream_timeout" => ApiError::UpstreamTimeout(message),
            "dependency_unavailable" => ApiError::DependencyUnavailable(message),
            "resource_exhausted" => ApiError::ResourceExhausted {
                message,
                retry_after_secs: 0,
            },
            "unavailable" => ApiError::Unavailable {
                detail: "relayed from a prompt's stream".into(),
            },
            _ => ApiError::Internal {
                public: "Failed to prompt the conversation",
                detail: "relayed from a prompt's stream".into(),
            },
        }
    }

    /// Writes what the caller is not told to the log: the detail of an
    /// internal error or of an unavailable database. Each adapter calls it in
    /// its one mapping, so every failure passes here.
    pub fn log(&self) {
        match self {
            ApiError::Unavailable { detail } => {
                tracing::warn!(error = %detail, "database unavailable");
            }
            ApiError::Internal { detail, .. } => tracing::error!(error = %detail, "internal error"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_hide_their_detail() {
        let e = ApiError::from_store("Failed to create conversation")(StoreError::Internal(
            "syntax error near SELECT".into(),
        ));
        assert_eq!(e.to_string(), "Failed to create conversation");
        let e = ApiError::from_store("x")(StoreError::Unavailable("pool timed out".into()));
        assert!(matches!(e, ApiError::Unavailable { .. }));
        assert_eq!(e.to_string(), "Service temporarily unavailable");
    }
}
