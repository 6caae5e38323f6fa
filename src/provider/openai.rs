//! OpenAI's Chat Completions: the request, a whole reply, and a streamed
//! reply's `data:` chunks (Gemini and Bedrock speak it too).

use serde::{Deserialize, Serialize};

use super::{ChatMessage, Completion, ProviderError, Streamed};

#[derive(Serialize)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: &'a [ChatMessage],
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<&'a serde_json::Value>,
}

/// One `data:` event of a streamed completion.
#[derive(Deserialize)]
struct ChatChunk {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    delta: Option<ChoiceMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChatResponse {
    id: Option<String>,
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<ChoiceMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// Reads a whole reply.
pub fn completion(body: &[u8], asked: &str) -> Result<Completion, ProviderError> {
    let reply: ChatResponse = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Failed(format!("unreadable reply ({e})")))?;
    let choice = reply
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Failed("no choices in the reply".into()))?;
    let usage = reply.usage.unwrap_or(Usage {
        prompt_tokens: None,
        completion_tokens: None,
    });
    Ok(Completion {
        content: choice.message.and_then(|m| m.content).unwrap_or_default(),
        model: reply.model.unwrap_or_else(|| asked.to_owned()),
        tokens_in: usage.prompt_tokens.unwrap_or(0),
        tokens_out: usage.completion_tokens.unwrap_or(0),
        metadata: serde_json::json!({
            "providerId": reply.id,
            "finishReason": choice.finish_reason,
        }),
    })
}

/// Reads one streamed Chat Completions chunk into `state`; its pieces.
pub fn event(data: &str, state: &mut Streamed) -> Result<Vec<String>, ProviderError> {
    let chunk: ChatChunk = serde_json::from_str(data)
        .map_err(|e| ProviderError::Failed(format!("unreadable event ({e})")))?;
    state.id = state.id.take().or(chunk.id);
    state.model = state.model.take().or(chunk.model);
    if let Some(usage) = chunk.usage {
        state.tokens_in = usage.prompt_tokens.unwrap_or(state.tokens_in);
        state.tokens_out = usage.completion_tokens.unwrap_or(state.tokens_out);
    }
    let mut pieces = Vec::new();
    for choice in chunk.choices {
        state.finish = state.finish.take().or(choice.finish_reason);
        if let Some(piece) = choice.delta.and_then(|d| d.content)
            && !piece.is_empty()
        {
            pieces.push(piece);
        }
    }
    Ok(pieces)
}
