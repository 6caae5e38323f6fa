//! The JSON of the conversation routes: typed bodies and queries (parsed by
//! the extractors, described by the OpenAPI document from the same types)
//! and the platform's ConversationDTO.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::http::extract::{JsonText, QueryBool, QueryInt};
use crate::service::conversations::Conversation;

/// `POST /conversation`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateConversationBody {
    /// The repository the conversation is about.
    #[serde(default)]
    #[schema(value_type = String, format = Uuid, required = true)]
    pub repo_id: JsonText,
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

/// The query of `GET /conversation`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// Page size (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub take: Option<QueryInt>,
    /// Conversations to skip (default 0).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub skip: Option<QueryInt>,
    /// Created at or after this time (a date: from its start).
    #[param(schema_with = time_bound)]
    pub from: Option<String>,
    /// Created at or before this time (a date: to its end). Not before `from`.
    #[param(schema_with = time_bound)]
    pub to: Option<String>,
    /// Only this creator's.
    #[param(format = Uuid)]
    pub user_id: Option<String>,
    /// Only this workspace's.
    #[param(format = Uuid)]
    pub workspace_id: Option<String>,
    /// Only this repository's.
    #[param(format = Uuid)]
    pub repo_id: Option<String>,
    /// Include soft-deleted conversations.
    #[param(value_type = Option<bool>)]
    pub show_deleted: Option<QueryBool>,
}

/// The query of `GET /conversation/{id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct GetQuery {
    /// Also find it if soft-deleted
    #[param(value_type = Option<bool>)]
    pub show_deleted: Option<QueryBool>,
}

/// The query of `DELETE /conversation/{id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct DeleteQuery {
    /// Remove the row instead of marking it deleted
    #[param(value_type = Option<bool>)]
    pub hard_delete: Option<QueryBool>,
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

/// A time as the DTOs write it: RFC 3339 UTC with microseconds.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl From<Conversation> for ConversationDto {
    fn from(c: Conversation) -> Self {
        ConversationDto {
            id: c.id.to_string(),
            org_id: c.org_id.to_string(),
            created_by: c.created_by.to_string(),
            created_at: Some(rfc3339(c.created_at)),
            last_updated_at: Some(rfc3339(c.last_updated_at)),
            workspace_id: c.workspace_id.to_string(),
            repo_id: c.repo_id.to_string(),
            tokens_in: c.tokens_in.to_string(),
            tokens_out: c.tokens_out.to_string(),
            deleted_at: c.deleted_at.map(rfc3339),
            title: c.title,
            repo: RepoDto {
                id: c.repo_id.to_string(),
                name: c.repo_name,
            },
            creator: UserDto {
                id: c.created_by.to_string(),
                name: c.creator_name,
                last_name: c.creator_last_name,
                email: c.creator_email,
            },
        }
    }
}

/// An RFC 3339 date-time or a full date.
pub(crate) fn time_bound() -> utoipa::openapi::schema::Schema {
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
