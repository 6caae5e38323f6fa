//! The JSON of the message routes: the prompt body, the messages query, and
//! the platform's MessageDTO.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::http::conversations::dto::rfc3339;
use crate::http::extract::{JsonText, QueryInt};
use crate::service::messages::{Message, Turn};

/// `POST /conversation/{id}/prompt`.
#[derive(Deserialize, ToSchema)]
pub struct PromptBody {
    /// What the user says; must not be empty.
    #[serde(default)]
    #[schema(value_type = String, min_length = 1, required = true, pattern = r"^[^\u0000]*$")]
    pub prompt: JsonText,
    /// The model to ask.
    #[serde(default)]
    #[schema(value_type = String, min_length = 1, required = true, pattern = r"^[^\u0000]*$")]
    pub model: JsonText,
    /// With `Accept: text/event-stream`: what happens if the caller goes
    /// away before the reply is done. `cancel` (the default) stops the
    /// model and stores nothing; `continue` finishes and stores the turn,
    /// whose stream can be resumed.
    #[serde(default, rename = "onDisconnect")]
    #[schema(value_type = Option<String>, pattern = "^(cancel|continue)$")]
    pub on_disconnect: JsonText,
}

/// The query of `GET /conversation/{id}/prompt/{turnId}/events`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResumeQuery {
    /// The seq of the last event received (0: none); `Last-Event-ID` says
    /// the same and wins.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub after: Option<QueryInt>,
}

/// The query of `GET /conversation/{id}/messages`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Page size (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub take: Option<QueryInt>,
    /// Messages to skip (default 0).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub skip: Option<QueryInt>,
}

/// A prompt's turn: the assistant's reply text (the platform client's
/// `SendPromptResponse.message`), both stored messages, and the usage.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromptReply {
    /// Always `true`.
    pub success: bool,
    /// The assistant's reply text.
    pub message: String,
    /// The assistant's message, as stored.
    pub assistant_message: MessageDto,
    /// The prompt, as stored.
    pub user_message: MessageDto,
    pub usage: UsageDto,
}

impl From<Turn> for PromptReply {
    fn from(turn: Turn) -> Self {
        PromptReply {
            success: true,
            message: turn.assistant_message.content.clone(),
            assistant_message: turn.assistant_message.into(),
            user_message: turn.user_message.into(),
            usage: UsageDto {
                tokens_in: turn.tokens_in,
                tokens_out: turn.tokens_out,
            },
        }
    }
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

impl From<Message> for MessageDto {
    fn from(m: Message) -> Self {
        MessageDto {
            id: m.id.to_string(),
            conversation_id: m.conversation_id.to_string(),
            role: m.role.as_str().to_owned(),
            content: m.content,
            token_count: u64::try_from(m.token_count).unwrap_or_default(),
            model: m.model,
            metadata: m.metadata,
            created_at: Some(rfc3339(m.created_at)),
        }
    }
}
