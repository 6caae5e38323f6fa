//! The JSON bodies of the REST gateway, as Rust types: the handlers serialize
//! exactly these, and the OpenAPI document is derived from exactly these, so
//! the two cannot drift apart.

use serde::Serialize;
use utoipa::ToSchema;

use crate::pb;

/// `POST /conversation`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateConversationBody {
    /// The repository the conversation is about.
    #[schema(format = Uuid)]
    pub repo_id: String,
}

/// A new conversation's id.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateConversationReply {
    /// Always `true`.
    pub success: bool,
    #[schema(format = Uuid)]
    pub conversation_id: String,
}

/// A page of conversations, newest first.
#[derive(Serialize, ToSchema)]
pub struct ListConversationsReply {
    /// Always `true`.
    pub success: bool,
    pub conversations: Vec<ConversationDto>,
    /// How many conversations match, across all pages.
    pub total: u64,
}

/// One conversation.
#[derive(Serialize, ToSchema)]
pub struct GetConversationReply {
    /// Always `true`.
    pub success: bool,
    pub conversation: ConversationDto,
}

/// A success without data.
#[derive(Serialize, ToSchema)]
pub struct SuccessReply {
    /// Always `true`.
    pub success: bool,
}

/// Every error, whatever its status.
#[derive(Serialize, ToSchema)]
pub struct ErrorReply {
    /// Always `false`.
    pub success: bool,
    /// What went wrong, for people; never internals.
    pub message: String,
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

/// A health answer.
#[derive(Serialize, ToSchema)]
pub struct HealthReply {
    /// Always `true`.
    pub success: bool,
    /// `ok` (alive) or `ready` (the database answers).
    pub status: String,
}

/// The platform's ConversationDTO: camelCase, token totals as decimal
/// strings, times in RFC 3339 UTC with microseconds, absent values as null.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationDto {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub org_id: String,
    /// The creator's user id.
    #[schema(format = Uuid)]
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_updated_at: Option<String>,
    #[schema(format = Uuid)]
    pub workspace_id: String,
    #[schema(format = Uuid)]
    pub repo_id: String,
    /// Input tokens used so far, as a decimal string.
    #[schema(pattern = "^[0-9]+$")]
    pub tokens_in: String,
    /// Output tokens used so far, as a decimal string.
    #[schema(pattern = "^[0-9]+$")]
    pub tokens_out: String,
    /// Set when the conversation is soft-deleted.
    #[schema(format = DateTime)]
    pub deleted_at: Option<String>,
    pub title: Option<String>,
    pub repo: RepoDto,
    pub creator: UserDto,
}

/// `POST /conversation/{id}/prompt`.
#[derive(Serialize, ToSchema)]
pub struct PromptBody {
    /// What the user says; must not be empty.
    #[schema(min_length = 1)]
    pub prompt: String,
    /// The model to ask.
    #[schema(min_length = 1)]
    pub model: String,
}

/// A prompt's turn: the assistant's message, the user's, and the usage.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromptReply {
    /// Always `true`.
    pub success: bool,
    /// The assistant's reply, as stored.
    pub message: MessageDto,
    /// The prompt, as stored.
    pub user_message: MessageDto,
    pub usage: UsageDto,
}

/// What the provider reported for a turn.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageDto {
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// A page of a conversation's messages, oldest first.
#[derive(Serialize, ToSchema)]
pub struct MessagesReply {
    /// Always `true`.
    pub success: bool,
    pub messages: Vec<MessageDto>,
    /// The conversation's title (null until the first prompt).
    pub title: Option<String>,
    /// How many messages the conversation has.
    pub total: u64,
}

/// The platform's MessageDTO.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageDto {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub conversation_id: String,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    pub token_count: u64,
    pub model: String,
    /// What the provider said about the turn.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
}

impl From<pb::Message> for MessageDto {
    fn from(m: pb::Message) -> Self {
        MessageDto {
            id: m.id,
            conversation_id: m.conversation_id,
            role: m.role,
            content: m.content,
            token_count: m.token_count,
            model: m.model,
            metadata: serde_json::from_str(&m.metadata_json)
                .unwrap_or_else(|_| serde_json::json!({})),
            created_at: rfc3339(m.created_at),
        }
    }
}

/// A protobuf time as the DTOs write it: RFC 3339 UTC with microseconds.
fn rfc3339(t: Option<prost_types::Timestamp>) -> Option<String> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// The query of `GET /conversation/{id}/messages`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct MessagesQuery {
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 100)]
    take: Option<i64>,
    /// Messages to skip (default 0).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    skip: Option<i64>,
}

/// The conversation's repository.
#[derive(Serialize, ToSchema)]
pub struct RepoDto {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
}

/// The conversation's creator.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDto {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: Option<String>,
    pub last_name: Option<String>,
    pub email: String,
}

impl From<pb::Conversation> for ConversationDto {
    fn from(c: pb::Conversation) -> Self {
        let time = rfc3339;
        let text = |s: String| (!s.is_empty()).then_some(s);
        let repo = c.repo.unwrap_or_default();
        let creator = c.creator.unwrap_or_default();
        ConversationDto {
            id: c.id,
            org_id: c.org_id,
            created_by: c.created_by,
            created_at: time(c.created_at),
            last_updated_at: time(c.last_updated_at),
            workspace_id: c.workspace_id,
            repo_id: c.repo_id,
            tokens_in: c.tokens_in.to_string(),
            tokens_out: c.tokens_out.to_string(),
            deleted_at: time(c.deleted_at),
            title: text(c.title),
            repo: RepoDto {
                id: repo.id,
                name: repo.name,
            },
            creator: UserDto {
                id: creator.id,
                name: text(creator.name),
                last_name: text(creator.last_name),
                email: creator.email,
            },
        }
    }
}

/// The query of `GET /conversation` (documentation only: the gateway reads
/// the raw query so that it can report errors after authentication).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ListQuery {
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 100)]
    take: Option<i64>,
    /// Conversations to skip (default 0).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    skip: Option<i64>,
    /// Created at or after this time (a date: from its start).
    #[param(schema_with = time_bound)]
    from: Option<String>,
    /// Created at or before this time (a date: to its end). Not before `from`.
    #[param(schema_with = time_bound)]
    to: Option<String>,
    /// Only this creator's.
    #[param(format = Uuid)]
    user_id: Option<String>,
    /// Only this workspace's.
    #[param(format = Uuid)]
    workspace_id: Option<String>,
    /// Only this repository's.
    #[param(format = Uuid)]
    repo_id: Option<String>,
    /// Include soft-deleted conversations.
    show_deleted: Option<bool>,
}

/// An RFC 3339 date-time or a full date.
fn time_bound() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{
        KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
    };
    let string = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    let one_of = OneOfBuilder::new()
        .item(string(KnownFormat::DateTime))
        .item(string(KnownFormat::Date))
        .build();
    Schema::OneOf(one_of)
}
