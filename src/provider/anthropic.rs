//! Anthropic's Messages API: `POST {base}/v1/messages` with `x-api-key` and
//! `anthropic-version`, its reply (`content` blocks, `usage.input_tokens` /
//! `output_tokens`), and its streamed event types (`message_start`,
//! `content_block_delta`, `message_delta`, `message_stop`, `ping`, `error`).

use serde::{Deserialize, Serialize};

use super::{ChatMessage, Completion, ProviderError, Streamed};

/// The API version every request names.
pub const VERSION: &str = "2023-06-01";

/// The longest reply asked for (the API requires a limit).
pub const MAX_TOKENS: u32 = 4096;

/// A request to `/v1/messages`.
#[derive(Serialize)]
pub struct Request<'a> {
    pub model: &'a str,
    pub max_tokens: u32,
    pub messages: &'a [ChatMessage],
    pub stream: bool,
}

#[derive(Deserialize)]
struct Usage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(default)]
    text: Option<String>,
}

/// A whole reply.
#[derive(Deserialize)]
struct Reply {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    stop_reason: Option<String>,
    usage: Option<Usage>,
}

/// Reads a whole reply.
pub fn completion(body: &[u8], asked: &str) -> Result<Completion, ProviderError> {
    let reply: Reply = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Failed(format!("unreadable reply ({e})")))?;
    let content: String = reply.content.into_iter().filter_map(|b| b.text).collect();
    let usage = reply.usage.unwrap_or(Usage {
        input_tokens: None,
        output_tokens: None,
    });
    Ok(Completion {
        content,
        model: reply.model.unwrap_or_else(|| asked.to_owned()),
        tokens_in: usage.input_tokens.unwrap_or(0),
        tokens_out: usage.output_tokens.unwrap_or(0),
        metadata: serde_json::json!({
            "providerId": reply.id,
            "finishReason": reply.stop_reason,
        }),
    })
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    message: Option<Reply>,
    delta: Option<Delta>,
    usage: Option<Usage>,
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct Delta {
    text: Option<String>,
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

/// What one event means for the reply.
pub enum Step {
    /// A piece of text.
    Piece(String),
    /// Nothing to pass on (start, ping, a block's start or end).
    Nothing,
    /// The reply is whole.
    Done,
}

/// Reads one event's `data` into `state`.
pub fn event(data: &str, state: &mut Streamed) -> Result<Step, ProviderError> {
    let event: Event = serde_json::from_str(data)
        .map_err(|e| ProviderError::Failed(format!("unreadable event ({e})")))?;
    Ok(match event.kind.as_str() {
        "message_start" => {
            if let Some(message) = event.message {
                state.id = message.id;
                state.model = message.model;
                if let Some(usage) = message.usage {
                    state.tokens_in = usage.input_tokens.unwrap_or(state.tokens_in);
                    state.tokens_out = usage.output_tokens.unwrap_or(state.tokens_out);
                }
            }
            Step::Nothing
        }
        "content_block_delta" => match event.delta.and_then(|d| d.text) {
            Some(text) if !text.is_empty() => Step::Piece(text),
            _ => Step::Nothing,
        },
        "message_delta" => {
            if let Some(stop) = event.delta.and_then(|d| d.stop_reason) {
                state.finish = Some(stop);
            }
            if let Some(usage) = event.usage {
                state.tokens_in = usage.input_tokens.unwrap_or(state.tokens_in);
                state.tokens_out = usage.output_tokens.unwrap_or(state.tokens_out);
            }
            Step::Nothing
        }
        "message_stop" => Step::Done,
        "error" => {
            let detail = event.error.map(|e| {
                let message: String = e.message.unwrap_or_default().chars().take(200).collect();
                format!("{} {message}", e.kind.unwrap_or_default())
            });
            return Err(ProviderError::Failed(
                detail.unwrap_or_default().trim().to_owned(),
            ));
        }
        _ => Step::Nothing,
    })
}
