//! What every rpc reads from its metadata (credentials, request id,
//! idempotency key) and how it answers (the reply or the status, each with
//! the request id).

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Response, Status};

use crate::domain::Transport;
use crate::error::ApiError;
use crate::protocol::{AUTHORIZATION, IDEMPOTENCY_KEY, REQUEST_ID, request_id_or_new};
use crate::service::idempotency::IdempotencyKey;
use crate::service::{Credentials, RequestContext};

/// The caller's credentials, as the metadata carries them.
pub fn credentials(metadata: &MetadataMap) -> Credentials {
    Credentials::from_values(metadata.get_all(AUTHORIZATION).iter().map(|v| v.as_bytes()))
}

/// The caller's idempotency key, if sent.
pub fn idempotency_key(metadata: &MetadataMap) -> Result<Option<IdempotencyKey>, ApiError> {
    IdempotencyKey::from_values(
        metadata
            .get_all(IDEMPOTENCY_KEY)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

/// The request id (the caller's when sane) and the transport.
pub fn context(metadata: &MetadataMap) -> RequestContext {
    let given = metadata.get(REQUEST_ID).and_then(|v| v.to_str().ok());
    RequestContext {
        request_id: request_id_or_new(given),
        transport: Transport::Grpc,
    }
}

/// Finishes an rpc: the reply or the error as a status, each carrying the
/// request id.
pub fn finish<T>(ctx: &RequestContext, result: Result<T, ApiError>) -> Result<Response<T>, Status> {
    let id = MetadataValue::try_from(ctx.request_id.as_str()).ok();
    match result {
        Ok(reply) => {
            let mut response = Response::new(reply);
            if let Some(id) = id {
                response.metadata_mut().insert(REQUEST_ID, id);
            }
            Ok(response)
        }
        Err(e) => {
            let mut status = Status::from(e);
            if let Some(id) = id {
                status.metadata_mut().insert(REQUEST_ID, id);
            }
            Err(status)
        }
    }
}

/// A proto3 string as an optional value: empty means not given.
pub fn given(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

/// A time as a protobuf timestamp.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
