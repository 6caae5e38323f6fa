//! The REST/JSON gateway. It does no business logic: it parses JSON, builds
//! the proto request, copies `authorization` and `x-request-id` into its
//! metadata, awaits the service method in-process, and turns the reply or the
//! `tonic::Status` into HTTP. So REST and gRPC cannot disagree about a rule.
//!
//! Every response it writes, the framework's own rejections included, is JSON:
//! `{"success": true, ...}` or `{"success": false, "message": "..."}`.

mod extract;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tonic::metadata::MetadataMap;

use crate::domain::Transport;
use crate::error::http_status;
use crate::pb::CreateConversationRequest;
use crate::pb::conversation_service_server::ConversationService;
use crate::service::{ConversationApi, FieldError, REQUEST_ID, is_sane_request_id};
use extract::JsonObject;

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

type Api = State<Arc<ConversationApi>>;

/// The gateway's routes over the shared service.
pub fn router(api: Arc<ConversationApi>) -> Router {
    Router::new()
        .route("/conversation", post(create_conversation))
        .method_not_allowed_fallback(|| async {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        })
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "Not found") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(request_id))
        .with_state(api)
}

/// `POST /conversation` -> `CreateConversation`.
async fn create_conversation(
    State(api): Api,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Response {
    let (repo_id, field_error) = match body.get("repoId") {
        None | Some(Value::Null) => (String::new(), None),
        Some(Value::String(s)) => (s.clone(), None),
        Some(_) => (String::new(), Some("repoId must be a string")),
    };
    let mut request = grpc_request(&headers, CreateConversationRequest { repo_id });
    if let Some(message) = field_error {
        request.extensions_mut().insert(FieldError(message.into()));
    }
    match api.create_conversation(request).await {
        Ok(reply) => success(json!({ "conversationId": reply.into_inner().conversation_id })),
        Err(status) => status_response(&status),
    }
}

/// Wraps a message in a tonic request as the gRPC server would see it: the
/// caller's `authorization` and `x-request-id` as metadata, marked as HTTP.
fn grpc_request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut carried = HeaderMap::new();
    for name in ["authorization", REQUEST_ID] {
        for value in headers.get_all(name) {
            carried.append(name, value.clone());
        }
    }
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = MetadataMap::from_headers(carried);
    request.extensions_mut().insert(Transport::Http);
    request
}

/// `{"success": true, ...fields}` with status 200.
fn success(fields: Value) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("success".into(), Value::Bool(true));
    if let Value::Object(fields) = fields {
        body.extend(fields);
    }
    (StatusCode::OK, axum::Json(Value::Object(body))).into_response()
}

/// A service error as HTTP: the code table's status, the status message.
fn status_response(status: &tonic::Status) -> Response {
    error_response(http_status(status.code()), status.message())
}

/// `{"success": false, "message": ...}` with the given status.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "success": false, "message": message })),
    )
        .into_response()
}

/// Keeps a sane incoming `x-request-id` or makes one, hands it on to the
/// handler (and so to the service), and echoes it on every response.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane_request_id(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    request.headers_mut().insert(REQUEST_ID, value.clone());
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, value);
    response
}
