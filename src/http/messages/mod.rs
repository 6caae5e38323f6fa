//! The message routes: prompting a conversation (JSON, or server-sent
//! events when asked for) and listing its messages.

pub mod dto;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;

use super::AppState;
use super::error::{ApiErrors, ErrorReply};
use super::extract::{Authenticated, JsonBody, Query};
use crate::error::ApiError;
use crate::service::messages::{ListMessages, OnDisconnect, Prompt, PromptEvent, PromptStream};
use crate::service::params::{self, Page};
use crate::service::{Credentials, RequestContext};
use dto::{MessageDto, MessagesQuery, MessagesReply, PromptBody, PromptReply, ResumeQuery};

/// Send a prompt to a model, with the conversation's earlier turns.
///
/// With `Accept: text/event-stream` the reply is streamed as server-sent
/// events: `delta` events (`{"content": "..."}`) as the model writes, then one
/// `done` event with this operation's JSON reply, or an `error` event.
/// Stores the user and the assistant message and adds the provider's usage to
/// the conversation's totals, all in one transaction; nothing is stored if the
/// provider fails. The first prompt titles an untitled conversation. Needs read
/// access to the workspace; regular users prompt only their own conversations.
/// The policies of the conversation's organization, workspace and repository
/// check the prompt before the model and the reply after it (and while it
/// streams): a blocking one answers 400 `Blocked by policy "<name>": ...`.
#[utoipa::path(post, path = "/conversation/{id}/prompt", tag = "conversations",
    request_body = PromptBody,
    params(("id" = String, Path, format = Uuid, description = "The conversation")),
    responses(
        ApiErrors,
        (status = 200, description = "The assistant's reply (JSON, or server-sent events when asked for)",
            content((PromptReply = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "Invalid body: empty prompt, missing, disallowed or unknown model; no provider for the repository; blocked by a policy", body = ErrorReply),
        (status = 403, description = "No access to the conversation's workspace", body = ErrorReply),
        (status = 404, description = "Conversation not found", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
        (status = 429, description = "A token budget has no room for the prompt (with Retry-After: seconds until its period ends); no model was called", body = ErrorReply),
        (status = 502, description = "The model provider failed", body = ErrorReply),
        (status = 503, description = "Policy evaluation unavailable (a blocking policy could not be judged)", body = ErrorReply),
        (status = 504, description = "The model provider, or the request, timed out", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn prompt_conversation(
    Path(id): Path<String>,
    State(service): State<AppState>,
    credentials: Credentials,
    ctx: RequestContext,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PromptBody>,
) -> Result<Response, ApiError> {
    let input = (|| {
        let prompt = body.prompt.text("prompt")?;
        let model = body.model.text("model")?;
        let on_disconnect = match body.on_disconnect.text("onDisconnect")? {
            Some(v) => OnDisconnect::parse("onDisconnect", &v)?,
            None => OnDisconnect::Cancel,
        };
        Ok(Prompt {
            conversation_id: params::uuid("conversationId", &id)?,
            prompt: prompt.unwrap_or_default(),
            model: model.unwrap_or_default(),
            on_disconnect,
        })
    })();
    let streamed = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if streamed {
        // Refusals before the model is asked are plain JSON errors with their
        // status, as without streaming.
        let events = service.prompt_stream(&credentials, input, &ctx).await?;
        return Ok(server_sent(events));
    }
    let turn = service.prompt(&credentials, input, &ctx).await?;
    Ok(Json(PromptReply::from(turn)).into_response())
}

/// A streamed prompt as server-sent events: `delta` ({"content": ...}) as the
/// model writes, then `done` (the reply the JSON route gives) or `error`
/// ({"success": false, "message": ...}); each with the id `<turnId>:<seq>`
/// (what `Last-Event-ID` gives back when resuming). The turn id is also the
/// `Prompt-Turn-Id` header.
fn server_sent(stream: PromptStream) -> Response {
    let (turn, events) = stream.until_last();
    let events = events.map(move |item| {
        let event = match item.event {
            Ok(PromptEvent::Delta(piece)) => Event::default()
                .event("delta")
                .json_data(serde_json::json!({ "content": piece })),
            Ok(PromptEvent::Done(turn)) => Event::default()
                .event("done")
                .json_data(PromptReply::from(*turn)),
            Err(e) => {
                e.log();
                Event::default().event("error").json_data(ErrorReply {
                    success: false,
                    message: e.to_string(),
                })
            }
        };
        event
            .map(|e| e.id(format!("{turn}:{}", item.seq)))
            .map_err(axum::Error::new)
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    if let Ok(id) = axum::http::HeaderValue::from_str(&turn.to_string()) {
        response.headers_mut().insert(TURN_ID_HEADER, id);
    }
    response
}

/// The header a streamed prompt's reply names its turn in.
pub const TURN_ID_HEADER: &str = "prompt-turn-id";

/// Resume a streamed prompt: the events after the last one received.
///
/// Server-sent events as the prompt's own stream (`delta`, then `done` or
/// `error`, ids `<turnId>:<seq>`), starting after `Last-Event-ID` (or
/// `?after=<seq>`; neither: from the first), on any replica: those already
/// sent, then the rest as they come, with no gap or duplicate. Kept for a
/// while (10 minutes by default) after the turn is over. If the replica
/// running the turn dies, the stream ends with an `error` event.
#[utoipa::path(get, path = "/conversation/{id}/prompt/{turnId}/events", tag = "conversations",
    params(
        ("id" = String, Path, format = Uuid, description = "The conversation"),
        ("turnId" = String, Path, format = Uuid, description = "The streamed turn"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = r"^([^:]*:)?[0-9]{1,19}$",
            description = "The id of the last event received, `<turnId>:<seq>` (the seq is what counts)"),
        ResumeQuery,
    ),
    responses(
        ApiErrors,
        (status = 200, description = "The stream's events", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid id, seq or Last-Event-ID", body = ErrorReply),
        (status = 404, description = "Conversation or stream not found (or expired)", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn resume_prompt(
    Path((id, turn)): Path<(String, String)>,
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Query(q): Query<ResumeQuery>,
) -> Result<Response, ApiError> {
    let conversation_id = params::uuid("conversationId", &id)?;
    let turn_id = params::uuid("turnId", &turn)?;
    // The seq is what counts (the turn is the path's).
    let after = match headers.get("last-event-id") {
        Some(v) => {
            let seq = v.to_str().ok().map(|v| v.rsplit(':').next().unwrap_or(v));
            seq.and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| {
                ApiError::InvalidArgument("Last-Event-ID must be <turnId>:<seq>".into())
            })?
        }
        None => match q.after {
            Some(after) => u64::try_from(after.0)
                .map_err(|_| ApiError::InvalidArgument("after must be 0 or more".into()))?,
            None => 0,
        },
    };
    let stream = service
        .resume_stream(&caller, conversation_id, turn_id, after)
        .await?;
    Ok(server_sent(stream))
}

/// A conversation's messages, oldest first, with its title.
#[utoipa::path(get, path = "/conversation/{id}/messages", tag = "conversations",
    params(("id" = String, Path, format = Uuid, description = "The conversation"), MessagesQuery),
    responses(
        ApiErrors,
        (status = 200, description = "A page of messages", body = MessagesReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
        (status = 404, description = "Conversation not found (or deleted)", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn list_messages(
    Path(id): Path<String>,
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<MessagesReply>, ApiError> {
    let input = ListMessages {
        conversation_id: params::uuid("conversationId", &id)?,
        page: Page::new(q.take.map(|t| t.0), q.skip.map(|s| s.0))?,
    };
    let page = service.list_messages(&caller, input).await?;
    Ok(Json(MessagesReply {
        success: true,
        messages: page.messages.into_iter().map(MessageDto::from).collect(),
        title: page.title,
        total: page.total,
    }))
}
