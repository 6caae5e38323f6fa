//! The conversation routes: each handler reads its request into the
//! operation's typed input, calls the same [`Service`](crate::service::Service)
//! method as the gRPC rpc, and writes the view as the platform's JSON.

pub mod dto;

use axum::Json;
use axum::extract::{Path, State};

use super::AppState;
use super::error::{ApiErrors, ErrorReply};
use super::extract::{Authenticated, IdempotencyHeader, JsonBody, Query, flag};
use crate::error::ApiError;
use crate::service::conversations::{
    CreateConversation, DeleteConversation, GetConversation, ListConversations,
};
use crate::service::params::{self, Bound, Page};
use crate::service::{Credentials, RequestContext};
use dto::{
    ConversationDto, CreateConversationBody, CreateConversationReply, DeleteQuery,
    GetConversationReply, GetQuery, ListConversationsReply, ListQuery, SuccessReply,
};

/// Create a conversation on a repository.
///
/// The caller needs any access to the repository's workspace (or to be an
/// organization administrator). Writes the conversation and its `created`
/// audit event together.
#[utoipa::path(post, path = "/conversation", tag = "conversations",
    request_body = CreateConversationBody,
    params(
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "Retry safely: a retry with the same key and body replays the first reply; \
                the same key with another body is 409. Per caller; remembered for 24 h by default."),
    ),
    responses(
        ApiErrors,
        (status = 200, description = "Created", body = CreateConversationReply),
        (status = 400, description = "Invalid body or repository state", body = ErrorReply),
        (status = 403, description = "No access to the repository's workspace", body = ErrorReply),
        (status = 404, description = "Repository not found", body = ErrorReply),
        (status = 409, description = "Idempotency-Key already used for a different request", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn create_conversation(
    State(service): State<AppState>,
    credentials: Credentials,
    ctx: RequestContext,
    IdempotencyHeader(key): IdempotencyHeader,
    JsonBody(body): JsonBody<CreateConversationBody>,
) -> Result<Json<CreateConversationReply>, ApiError> {
    let input = body.repo_id.text("repoId").and_then(|repo_id| {
        Ok(CreateConversation {
            repo_id: params::uuid("repoId", repo_id.as_deref().unwrap_or_default())?,
            idempotency_key: key?,
        })
    });
    let created = service
        .create_conversation(&credentials, input, &ctx)
        .await?;
    Ok(Json(CreateConversationReply {
        success: true,
        conversation_id: created.id.to_string(),
    }))
}

/// List the conversations the caller may see, newest first.
///
/// Regular users see their own conversations and all of those in workspaces
/// they administer; organization administrators see the whole organization.
#[utoipa::path(get, path = "/conversation", tag = "conversations",
    params(ListQuery),
    responses(
        ApiErrors,
        (status = 200, description = "A page", body = ListConversationsReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn list_conversations(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListConversationsReply>, ApiError> {
    let input = ListConversations {
        page: Page::new(q.take.map(|t| t.0), q.skip.map(|s| s.0))?,
        from: params::time_bound("from", q.from.as_deref(), Bound::Start)?,
        until: params::time_bound("to", q.to.as_deref(), Bound::End)?,
        user_id: params::optional_uuid("userId", q.user_id.as_deref())?,
        workspace_id: params::optional_uuid("workspaceId", q.workspace_id.as_deref())?,
        repo_id: params::optional_uuid("repoId", q.repo_id.as_deref())?,
        show_deleted: flag(q.show_deleted),
    };
    let page = service.list_conversations(&caller, input).await?;
    Ok(Json(ListConversationsReply {
        success: true,
        conversations: page
            .conversations
            .into_iter()
            .map(ConversationDto::from)
            .collect(),
        total: page.total,
    }))
}

/// One conversation the caller may see.
#[utoipa::path(get, path = "/conversation/{id}", tag = "conversations",
    params(("id" = String, Path, format = Uuid, description = "The conversation"), GetQuery),
    responses(
        ApiErrors,
        (status = 200, description = "The conversation", body = GetConversationReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
        (status = 404, description = "Conversation not found", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn get_conversation(
    Path(id): Path<String>,
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<GetQuery>,
) -> Result<Json<GetConversationReply>, ApiError> {
    let input = GetConversation {
        id: params::uuid("conversationId", &id)?,
        show_deleted: flag(q.show_deleted),
    };
    let conversation = service.get_conversation(&caller, input).await?;
    Ok(Json(GetConversationReply {
        success: true,
        conversation: conversation.into(),
    }))
}

/// Delete a conversation: soft by default, for good with `hardDelete=true`.
///
/// Allowed to its creator, administrators of its workspace and organization
/// administrators. Writes a `deleted` audit event in the same transaction.
#[utoipa::path(delete, path = "/conversation/{id}", tag = "conversations",
    params(("id" = String, Path, format = Uuid, description = "The conversation"), DeleteQuery),
    responses(
        ApiErrors,
        (status = 200, description = "Deleted", body = SuccessReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
        (status = 404, description = "Conversation not found", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn delete_conversation(
    Path(id): Path<String>,
    State(service): State<AppState>,
    ctx: RequestContext,
    Authenticated(caller): Authenticated,
    Query(q): Query<DeleteQuery>,
) -> Result<Json<SuccessReply>, ApiError> {
    let input = DeleteConversation {
        id: params::uuid("conversationId", &id)?,
        hard: flag(q.hard_delete),
    };
    service.delete_conversation(&caller, input, &ctx).await?;
    Ok(Json(SuccessReply { success: true }))
}
