//! The REST/JSON gateway. It does no business logic: it parses JSON, builds
//! the proto request, copies `authorization` and `x-request-id` into its
//! metadata, awaits the service method in-process, and turns the reply or the
//! `tonic::Status` into HTTP. So REST and gRPC cannot disagree about a rule.
//!
//! Every response it writes, the framework's own rejections included, is JSON:
//! `{"success": true, ...}` or `{"success": false, "message": "..."}`.

mod dto;
mod extract;
pub mod openapi;
pub mod serve;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;
use tonic::metadata::MetadataMap;

use crate::domain::Transport;
use crate::error::http_status_of;
use crate::pb::conversation_service_server::ConversationService;
use crate::pb::{
    self, CreateConversationRequest, DeleteConversationRequest, GetConversationRequest,
    ListConversationsRequest, ListMessagesRequest, PromptConversationRequest,
};
use crate::service::{
    ConversationApi, FieldError, IDEMPOTENCY_KEY, REQUEST_ID, is_sane_request_id,
};
use dto::{
    ConversationDto, CreateConversationReply, ErrorReply, GetConversationReply, HealthReply,
    ListConversationsReply, SuccessReply,
};
use extract::JsonObject;

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

type Api = State<Arc<ConversationApi>>;

/// How the gateway is set up.
#[derive(Clone)]
pub struct HttpOptions {
    /// Longest a request may take before a 504.
    pub request_timeout: Duration,
    /// Serve `GET /metrics` here (else on a listener of its own).
    pub metrics: bool,
    /// The limit on API requests in flight, shared with gRPC.
    pub admission: crate::observe::Admission,
}

/// The gateway's routes over the shared service.
pub fn router(api: Arc<ConversationApi>, opts: &HttpOptions) -> Router {
    let metrics = api.metrics().clone();
    let mut router = Router::new()
        .route(
            "/conversation",
            post(create_conversation).get(list_conversations),
        )
        .route(
            "/conversation/{id}",
            get(get_conversation).delete(delete_conversation),
        )
        .route("/conversation/{id}/prompt", post(prompt_conversation))
        .route("/conversation/{id}/messages", get(list_messages))
        // Only the API routes above are limited; the probes below never are.
        .route_layer(middleware::from_fn_with_state(
            opts.admission.clone(),
            crate::observe::admit,
        ))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::serve));
    if opts.metrics {
        router = router.route("/metrics", get(metrics_text));
    }
    let timeout = opts.request_timeout;
    router
        .method_not_allowed_fallback(|| async {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        })
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "Not found") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            time_limit(timeout, request, next)
        }))
        .layer(middleware::map_response(json_errors))
        .layer(middleware::from_fn(request_id))
        .layer(middleware::from_fn_with_state(
            metrics,
            crate::observe::http,
        ))
        .with_state(api)
}

/// The metrics alone, for `--metrics-addr`.
pub fn metrics_router(api: Arc<ConversationApi>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "Not found") })
        .with_state(api)
}

/// Create a conversation on a repository.
///
/// The caller needs any access to the repository's workspace (or to be an
/// organization administrator). Writes the conversation and its `created`
/// audit event together.
#[utoipa::path(post, path = "/conversation", tag = "conversations",
    request_body = dto::CreateConversationBody,
    params(
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "Retry safely: a retry with the same key and body replays the first reply; \
                the same key with another body is 409. Per caller; remembered for 24 h by default."),
    ),
    responses(
        dto::ApiErrors,
        (status = 200, description = "Created", body = CreateConversationReply),
        (status = 400, description = "Invalid body or repository state", body = ErrorReply),
        (status = 403, description = "No access to the repository's workspace", body = ErrorReply),
        (status = 404, description = "Repository not found", body = ErrorReply),
        (status = 409, description = "Idempotency-Key already used for a different request", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
    ),
    security(("bearer" = [])))]
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
    reply(api.create_conversation(request).await, |r| {
        CreateConversationReply {
            success: true,
            conversation_id: r.conversation_id,
        }
    })
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = HealthReply)))]
async fn healthz() -> Response {
    ok(HealthReply {
        success: true,
        status: "ok".into(),
    })
}

/// Readiness: not shutting down, and the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthReply),
        (status = 503, description = "Shutting down, or the database is unreachable", body = ErrorReply),
    ))]
async fn readyz(State(api): Api) -> Response {
    match api.ready().await {
        Ok(()) => ok(HealthReply {
            success: true,
            status: "ready".into(),
        }),
        Err(crate::error::ApiError::Unavailable { detail }) if detail == "shutting down" => {
            error_response(StatusCode::SERVICE_UNAVAILABLE, "Shutting down")
        }
        Err(_) => error_response(StatusCode::SERVICE_UNAVAILABLE, "Database unreachable"),
    }
}

/// Prometheus metrics, in the OpenMetrics text format (here unless the
/// service runs with `--metrics-addr`, which moves them to a port of their own).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "The metrics",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
async fn metrics_text(State(api): Api) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        api.metrics().render(api.store()),
    )
        .into_response()
}

/// List the conversations the caller may see, newest first.
///
/// Regular users see their own conversations and all of those in workspaces
/// they administer; organization administrators see the whole organization.
#[utoipa::path(get, path = "/conversation", tag = "conversations",
    params(dto::ListQuery),
    responses(
        dto::ApiErrors,
        (status = 200, description = "A page", body = ListConversationsReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
    ),
    security(("bearer" = [])))]
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
        ListConversationsReply {
            success: true,
            conversations: r
                .conversations
                .into_iter()
                .map(ConversationDto::from)
                .collect(),
            total: r.total,
        }
    })
}

/// One conversation the caller may see.
#[utoipa::path(get, path = "/conversation/{id}", tag = "conversations",
    params(
        ("id" = String, Path, format = Uuid, description = "The conversation"),
        ("showDeleted" = Option<bool>, Query, description = "Also find it if soft-deleted"),
    ),
    responses(
        dto::ApiErrors,
        (status = 200, description = "The conversation", body = GetConversationReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
        (status = 404, description = "Conversation not found", body = ErrorReply),
    ),
    security(("bearer" = [])))]
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
    match api.get_conversation(request).await {
        Ok(r) => match r.into_inner().conversation {
            Some(c) => ok(GetConversationReply {
                success: true,
                conversation: c.into(),
            }),
            None => error_response(StatusCode::NOT_FOUND, "Conversation not found"),
        },
        Err(status) => status_response(&status),
    }
}

/// Delete a conversation: soft by default, for good with `hardDelete=true`.
///
/// Allowed to its creator, administrators of its workspace and organization
/// administrators. Writes a `deleted` audit event in the same transaction.
#[utoipa::path(delete, path = "/conversation/{id}", tag = "conversations",
    params(
        ("id" = String, Path, format = Uuid, description = "The conversation"),
        ("hardDelete" = Option<bool>, Query, description = "Remove the row instead of marking it deleted"),
    ),
    responses(
        dto::ApiErrors,
        (status = 200, description = "Deleted", body = SuccessReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
        (status = 404, description = "Conversation not found", body = ErrorReply),
    ),
    security(("bearer" = [])))]
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
    reply(api.delete_conversation(request).await, |_| SuccessReply {
        success: true,
    })
}

/// Send a prompt to a model, with the conversation's earlier turns.
///
/// With `Accept: text/event-stream` the reply is streamed as server-sent
/// events: `delta` events (`{"content": "..."}`) as the model writes, then one
/// `done` event with this operation's JSON reply, or an `error` event.
/// Stores the user and the assistant message and adds the provider's usage to
/// the conversation's totals, all in one transaction; nothing is stored if the
/// provider fails. The first prompt titles an untitled conversation. Needs read
/// access to the workspace; regular users prompt only their own conversations.
#[utoipa::path(post, path = "/conversation/{id}/prompt", tag = "conversations",
    request_body = dto::PromptBody,
    params(("id" = String, Path, format = Uuid, description = "The conversation")),
    responses(
        dto::ApiErrors,
        (status = 200, description = "The assistant's reply (JSON, or server-sent events when asked for)",
            content((dto::PromptReply = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "Invalid body: empty prompt, missing, disallowed or unknown model", body = ErrorReply),
        (status = 403, description = "No access to the conversation's workspace", body = ErrorReply),
        (status = 404, description = "Conversation not found", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
        (status = 501, description = "No model provider is configured", body = ErrorReply),
        (status = 502, description = "The model provider failed", body = ErrorReply),
        (status = 504, description = "The model provider, or the request, timed out", body = ErrorReply),
    ),
    security(("bearer" = [])))]
async fn prompt_conversation(
    State(api): Api,
    headers: HeaderMap,
    Path(conversation_id): Path<String>,
    JsonObject(body): JsonObject,
) -> Response {
    let mut field_error = None;
    let mut text = |name: &str| match body.get(name) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            field_error.get_or_insert(format!("{name} must be a string"));
            String::new()
        }
    };
    let message = PromptConversationRequest {
        conversation_id,
        prompt: text("prompt"),
        model: text("model"),
    };
    let streamed = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let request = grpc_request(&headers, message, field_error);
    if !streamed {
        return reply(api.prompt_conversation(request).await, prompt_reply);
    }
    // Server-sent events: `delta` events ({"content": ...}) as the model
    // writes, then `done` (the reply the JSON route gives) or `error`
    // ({"success": false, "message": ...}). Refusals before the model is
    // asked are plain JSON errors with their status, as without streaming.
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt as _;
    use pb::prompt_conversation_event::Event as Kind;
    match api.stream_prompt_conversation(request).await {
        Err(status) => status_response(&status),
        Ok(events) => {
            let events = events.into_inner().filter_map(|item| async move {
                let event = match item {
                    Ok(pb::PromptConversationEvent {
                        event: Some(Kind::Delta(piece)),
                    }) => Event::default()
                        .event("delta")
                        .json_data(serde_json::json!({ "content": piece })),
                    Ok(pb::PromptConversationEvent {
                        event: Some(Kind::Done(reply)),
                    }) => Event::default()
                        .event("done")
                        .json_data(prompt_reply(reply)),
                    Ok(_) => return None,
                    Err(status) => Event::default().event("error").json_data(ErrorReply {
                        success: false,
                        message: status.message().to_owned(),
                    }),
                };
                Some(event.map_err(axum::Error::new))
            });
            Sse::new(events)
                .keep_alive(KeepAlive::default())
                .into_response()
        }
    }
}

/// A prompt's turn as the REST reply shows it.
fn prompt_reply(r: pb::PromptConversationResponse) -> dto::PromptReply {
    let usage = r.usage.unwrap_or_default();
    dto::PromptReply {
        success: true,
        message: r.assistant_message.unwrap_or_default().into(),
        user_message: r.user_message.unwrap_or_default().into(),
        usage: dto::UsageDto {
            tokens_in: usage.tokens_in,
            tokens_out: usage.tokens_out,
        },
    }
}

/// A conversation's messages, oldest first, with its title.
#[utoipa::path(get, path = "/conversation/{id}/messages", tag = "conversations",
    params(("id" = String, Path, format = Uuid, description = "The conversation"), dto::MessagesQuery),
    responses(
        dto::ApiErrors,
        (status = 200, description = "A page of messages", body = dto::MessagesReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
        (status = 404, description = "Conversation not found (or deleted)", body = ErrorReply),
    ),
    security(("bearer" = [])))]
async fn list_messages(
    State(api): Api,
    headers: HeaderMap,
    Path(conversation_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut q = QueryParams::parse(query.as_deref());
    let message = ListMessagesRequest {
        conversation_id,
        take: q.integer("take"),
        skip: q.integer("skip"),
    };
    let request = grpc_request(&headers, message, q.first_error);
    reply(api.list_messages(request).await, |r| dto::MessagesReply {
        success: true,
        messages: r.messages.into_iter().map(dto::MessageDto::from).collect(),
        title: (!r.title.is_empty()).then_some(r.title),
        total: r.total,
    })
}

/// Query parameters, read one name at a time. A value that cannot be carried
/// into the proto request (a repeated name, an empty value, a non-number
/// where a number goes) is remembered as the first error, for the service to
/// report after it has authenticated the caller.
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

    /// The one value of `name`, if given ("" if not: the proto's "unset").
    fn text(&mut self, name: &str) -> String {
        let mut values = self.pairs.iter().filter(|(k, _)| k == name);
        let first = values.next().map(|(_, v)| v.clone());
        if values.next().is_some() {
            self.fail(format!("{name} must be given at most once"));
        }
        if first.as_deref() == Some("") {
            self.fail(format!("{name} must not be empty"));
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
            "" | "false" => false,
            "true" => true,
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
    for name in ["authorization", REQUEST_ID, IDEMPOTENCY_KEY] {
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

/// The reply of an rpc as HTTP: 200 with `body(reply)`, or the status as an
/// error.
fn reply<T, B: Serialize>(
    result: Result<tonic::Response<T>, tonic::Status>,
    body: impl FnOnce(T) -> B,
) -> Response {
    match result {
        Ok(r) => ok(body(r.into_inner())),
        Err(status) => status_response(&status),
    }
}

/// 200 with a JSON body.
fn ok(body: impl Serialize) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// A service error as HTTP: the code table's status, the status message.
fn status_response(status: &tonic::Status) -> Response {
    error_response(http_status_of(status), status.message())
}

/// `{"success": false, "message": ...}` with the given status.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(ErrorReply {
            success: false,
            message: message.to_owned(),
        }),
    )
        .into_response()
}

/// Answers 504 when a request takes longer than `limit`. Store work runs on
/// tasks of its own, so a transaction under way still finishes (or rolls
/// back) on its own; only the wait is cut short.
async fn time_limit(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error_response(StatusCode::GATEWAY_TIMEOUT, "Request timed out"),
    }
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
