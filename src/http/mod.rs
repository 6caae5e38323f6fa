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
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tonic::metadata::MetadataMap;

use crate::domain::Transport;
use crate::error::http_status;
use crate::pb::conversation_service_server::ConversationService;
use crate::pb::{
    Conversation, CreateConversationRequest, DeleteConversationRequest, GetConversationRequest,
    ListConversationsRequest,
};
use crate::service::{ConversationApi, FieldError, REQUEST_ID, is_sane_request_id};
use extract::JsonObject;

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

type Api = State<Arc<ConversationApi>>;

/// The gateway's routes over the shared service.
pub fn router(api: Arc<ConversationApi>) -> Router {
    Router::new()
        .route(
            "/conversation",
            post(create_conversation).get(list_conversations),
        )
        .route(
            "/conversation/{id}",
            get(get_conversation).delete(delete_conversation),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .method_not_allowed_fallback(|| async {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        })
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "Not found") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::map_response(json_errors))
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
    let request = grpc_request(
        &headers,
        CreateConversationRequest { repo_id },
        field_error.map(String::from),
    );
    reply(
        api.create_conversation(request).await,
        |r| json!({ "conversationId": r.conversation_id }),
    )
}

/// `GET /healthz`: the process is alive and serving HTTP.
async fn healthz() -> Response {
    success(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers, so requests can be served.
async fn readyz(State(api): Api) -> Response {
    match api.ready().await {
        Ok(()) => success(json!({ "status": "ready" })),
        Err(_) => error_response(StatusCode::SERVICE_UNAVAILABLE, "Database unreachable"),
    }
}

/// `GET /conversation?take&skip&from&to&userId&workspaceId&repoId&showDeleted`
/// -> `ListConversations`.
async fn list_conversations(
    State(api): Api,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut q = QueryParams::parse(query.as_deref());
    let message = ListConversationsRequest {
        take: q.integer("take"),
        skip: q.integer("skip"),
        from: q.text("from"),
        to: q.text("to"),
        user_id: q.text("userId"),
        workspace_id: q.text("workspaceId"),
        repo_id: q.text("repoId"),
        show_deleted: q.boolean("showDeleted"),
    };
    let request = grpc_request(&headers, message, q.first_error);
    reply(api.list_conversations(request).await, |r| {
        let list: Vec<Value> = r.conversations.iter().map(conversation_json).collect();
        json!({ "conversations": list, "total": r.total })
    })
}

/// `GET /conversation/{id}?showDeleted` -> `GetConversation`.
async fn get_conversation(
    State(api): Api,
    headers: HeaderMap,
    Path(conversation_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut q = QueryParams::parse(query.as_deref());
    let message = GetConversationRequest {
        conversation_id,
        show_deleted: q.boolean("showDeleted"),
    };
    let request = grpc_request(&headers, message, q.first_error);
    reply(
        api.get_conversation(request).await,
        |r| json!({ "conversation": r.conversation.as_ref().map(conversation_json) }),
    )
}

/// `DELETE /conversation/{id}?hardDelete=false|true` -> `DeleteConversation`.
async fn delete_conversation(
    State(api): Api,
    headers: HeaderMap,
    Path(conversation_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut q = QueryParams::parse(query.as_deref());
    let message = DeleteConversationRequest {
        conversation_id,
        hard_delete: q.boolean("hardDelete"),
    };
    let request = grpc_request(&headers, message, q.first_error);
    reply(api.delete_conversation(request).await, |_| json!({}))
}

/// A conversation as the platform's ConversationDTO: camelCase, token totals
/// as decimal strings, times in RFC 3339 UTC, absent values as null.
fn conversation_json(c: &Conversation) -> Value {
    let time = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    };
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let repo = c.repo.clone().unwrap_or_default();
    let creator = c.creator.clone().unwrap_or_default();
    json!({
        "id": c.id,
        "orgId": c.org_id,
        "createdBy": c.created_by,
        "createdAt": time(&c.created_at),
        "lastUpdatedAt": time(&c.last_updated_at),
        "workspaceId": c.workspace_id,
        "repoId": c.repo_id,
        "tokensIn": c.tokens_in.to_string(),
        "tokensOut": c.tokens_out.to_string(),
        "deletedAt": time(&c.deleted_at),
        "title": text(&c.title),
        "repo": { "id": repo.id, "name": repo.name },
        "creator": {
            "id": creator.id,
            "name": text(&creator.name),
            "lastName": text(&creator.last_name),
            "email": creator.email,
        },
    })
}

/// Query parameters, read one name at a time. A value that cannot be carried
/// into the proto request (a repeated name, a non-number where a number goes)
/// is remembered as the first error, for the service to report after it has
/// authenticated the caller. Empty values count as not given.
struct QueryParams {
    pairs: Vec<(String, String)>,
    first_error: Option<String>,
}

impl QueryParams {
    fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            pairs,
            first_error: None,
        }
    }

    fn fail(&mut self, message: String) {
        self.first_error.get_or_insert(message);
    }

    /// The one non-empty value of `name`, if any.
    fn text(&mut self, name: &str) -> String {
        let mut values = self
            .pairs
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty());
        let first = values.next().map(|(_, v)| v.clone());
        if values.next().is_some() {
            self.fail(format!("{name} must be given at most once"));
        }
        first.unwrap_or_default()
    }

    fn integer(&mut self, name: &str) -> Option<i64> {
        let value = self.text(name);
        if value.is_empty() {
            return None;
        }
        match value.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                self.fail(format!("{name} must be an integer"));
                None
            }
        }
    }

    fn boolean(&mut self, name: &str) -> bool {
        match self.text(name).as_str() {
            "" | "false" | "0" => false,
            "true" | "1" => true,
            _ => {
                self.fail(format!("{name} must be true or false"));
                false
            }
        }
    }
}

/// Wraps a message in a tonic request as the gRPC server would see it: the
/// caller's `authorization` and `x-request-id` as metadata, marked as HTTP,
/// with any field the gateway could not translate.
fn grpc_request<T>(
    headers: &HeaderMap,
    message: T,
    field_error: Option<String>,
) -> tonic::Request<T> {
    let mut carried = HeaderMap::new();
    for name in ["authorization", REQUEST_ID] {
        for value in headers.get_all(name) {
            carried.append(name, value.clone());
        }
    }
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = MetadataMap::from_headers(carried);
    request.extensions_mut().insert(Transport::Http);
    if let Some(message) = field_error {
        request.extensions_mut().insert(FieldError(message));
    }
    request
}

/// The reply of an rpc as HTTP: `{"success": true, ...fields(reply)}`, or the
/// status as an error.
fn reply<T>(
    result: Result<tonic::Response<T>, tonic::Status>,
    fields: impl FnOnce(T) -> Value,
) -> Response {
    match result {
        Ok(r) => success(fields(r.into_inner())),
        Err(status) => status_response(&status),
    }
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

/// The safety net under every route: an error response that is not already
/// JSON (an extractor's rejection we did not foresee, such as a path that is
/// not valid UTF-8) becomes `{"success": false, "message": <reason>}`, keeping
/// its status and headers such as `Allow`.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let replacement = error_response(status, status.canonical_reason().unwrap_or("Error"));
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.extend(replacement.headers().clone());
    Response::from_parts(parts, replacement.into_body())
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
