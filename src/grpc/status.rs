//! The one place an [`ApiError`] becomes a `tonic::Status`.

use tonic::{Code, Status};

use crate::error::ApiError;

/// The gRPC code of each error.
fn code(e: &ApiError) -> Code {
    match e {
        ApiError::Unauthenticated => Code::Unauthenticated,
        ApiError::InvalidArgument(_) => Code::InvalidArgument,
        ApiError::NotFound(_) => Code::NotFound,
        ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
        ApiError::PermissionDenied(_) => Code::PermissionDenied,
        ApiError::AlreadyExists(_) => Code::AlreadyExists,
        ApiError::Unimplemented(_) => Code::Unimplemented,
        ApiError::Upstream(_) => Code::Unavailable,
        ApiError::UpstreamTimeout(_) => Code::DeadlineExceeded,
        ApiError::Unavailable { .. } | ApiError::DependencyUnavailable(_) => Code::Unavailable,
        ApiError::ResourceExhausted { .. } => Code::ResourceExhausted,
        ApiError::Internal { .. } => Code::Internal,
    }
}

impl From<ApiError> for Status {
    /// The caller gets the public message only; the detail is logged.
    fn from(e: ApiError) -> Self {
        e.log();
        let mut status = Status::new(code(&e), e.to_string());
        if let ApiError::ResourceExhausted {
            retry_after_secs, ..
        } = &e
        {
            status
                .metadata_mut()
                .insert("retry-after", (*retry_after_secs).into());
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_error_has_its_code_and_public_message() {
        let cases = [
            (
                ApiError::Unauthenticated,
                Code::Unauthenticated,
                "Missing or invalid access token",
            ),
            (
                ApiError::InvalidArgument("repoId must be a UUID".into()),
                Code::InvalidArgument,
                "repoId must be a UUID",
            ),
            (
                ApiError::NotFound("Repository not found".into()),
                Code::NotFound,
                "Repository not found",
            ),
            (
                ApiError::FailedPrecondition("orphaned".into()),
                Code::FailedPrecondition,
                "orphaned",
            ),
            (
                ApiError::PermissionDenied("no".into()),
                Code::PermissionDenied,
                "no",
            ),
            (
                ApiError::AlreadyExists("used".into()),
                Code::AlreadyExists,
                "used",
            ),
            (
                ApiError::Unimplemented("no provider".into()),
                Code::Unimplemented,
                "no provider",
            ),
            (
                ApiError::Upstream("The model provider failed: HTTP 500".into()),
                Code::Unavailable,
                "The model provider failed: HTTP 500",
            ),
            (
                ApiError::UpstreamTimeout("late".into()),
                Code::DeadlineExceeded,
                "late",
            ),
            (
                ApiError::DependencyUnavailable("Policy evaluation unavailable".into()),
                Code::Unavailable,
                "Policy evaluation unavailable",
            ),
            (
                ApiError::ResourceExhausted {
                    message: "spent".into(),
                    retry_after_secs: 60,
                },
                Code::ResourceExhausted,
                "spent",
            ),
            (
                ApiError::Unavailable {
                    detail: "connection refused to 10.0.0.1".into(),
                },
                Code::Unavailable,
                "Service temporarily unavailable",
            ),
            (
                ApiError::Internal {
                    public: "Failed to create conversation",
                    detail: "no such table: x".into(),
                },
                Code::Internal,
                "Failed to create conversation",
            ),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }
}
