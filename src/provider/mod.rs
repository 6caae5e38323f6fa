//! The model provider: any OpenAI-compatible Chat Completions endpoint
//! (OpenAI, vLLM, Ollama, llama.cpp's server, ...), as the operator
//! configures it. Its API key never leaves this module: not in a reply, not in
//! a log, not in `Debug` (it is a `SecretString`).

use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource as _};
use futures_util::StreamExt as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

/// How the provider is reached.
#[derive(Debug, Clone, Default)]
pub struct ProviderConfig {
    /// The API base, such as `https://api.openai.com/v1` or
    /// `http://127.0.0.1:11434/v1`; `/chat/completions` is appended.
    pub base_url: Option<String>,
    /// Sent as `Authorization: Bearer ...` when set.
    pub api_key: Option<SecretString>,
    /// The models callers may ask for; any model when empty.
    pub models: Vec<String>,
    /// Longest a completion may take.
    pub timeout: Duration,
}

/// One turn sent to the model.
#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// What the model answered.
#[derive(Debug, Clone)]
pub struct Completion {
    pub content: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// What the provider said about the turn (id, finish reason), for the
    /// stored message's metadata.
    pub metadata: serde_json::Value,
}

/// Why a completion failed. The texts are safe to show to a caller: they name
/// the provider's status and error type, never its URL, key or headers.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("The model provider did not answer in time")]
    Timeout,
    #[error("The model provider failed: {0}")]
    Failed(String),
    /// The provider does not know the model (its 404, as OpenAI, vLLM and
    /// Ollama answer for an unknown model).
    #[error("The model provider does not know this model")]
    UnknownModel,
    /// Whoever wanted the streamed reply went away.
    #[error("The reply is no longer wanted")]
    Cancelled,
}

mod anthropic;

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI's Chat Completions (and every OpenAI-compatible endpoint).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

/// A configured provider.
pub struct Provider {
    http: reqwest::Client,
    wire: Wire,
    /// The API base, without a trailing slash.
    base: String,
    url: String,
    api_key: Option<SecretString>,
    models: Vec<String>,
}

/// `GET /models`: the models a provider offers.
#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<serde_json::Value>,
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

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: Option<String>,
    r#type: Option<String>,
}

impl Provider {
    /// The provider `config` describes, or `None` when no URL is configured.
    pub fn new(config: &ProviderConfig) -> anyhow::Result<Option<Provider>> {
        let Some(base) = &config.base_url else {
            return Ok(None);
        };
        let url = format!("{}/chat/completions", base.trim_end_matches('/'));
        reqwest::Url::parse(&url)
            .map_err(|e| anyhow::anyhow!("--provider-url {base:?} is not a URL: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()?;
        Ok(Some(Provider {
            http,
            wire: Wire::OpenAi,
            base: base.trim_end_matches('/').to_owned(),
            url,
            api_key: config.api_key.clone(),
            models: config.models.clone(),
        }))
    }

    /// A tenant's provider at `base`, speaking `wire`, reached through
    /// `http` (see `crate::egress::client`), any model allowed.
    pub fn connect(
        wire: Wire,
        base: &str,
        api_key: SecretString,
        http: reqwest::Client,
    ) -> Provider {
        let base = base.trim_end_matches('/').to_owned();
        let url = match wire {
            Wire::OpenAi => format!("{base}/chat/completions"),
            Wire::Anthropic => format!("{base}/v1/messages"),
        };
        Provider {
            http,
            wire,
            url,
            base,
            api_key: Some(api_key),
            models: Vec::new(),
        }
    }

    /// The host the provider is reached at (for the record of who answered).
    pub fn host(&self) -> Option<String> {
        reqwest::Url::parse(&self.base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
    }

    /// The models the provider offers (`GET {base}/models`).
    pub async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        let url = match self.wire {
            Wire::OpenAi => format!("{}/models", self.base),
            Wire::Anthropic => format!("{}/v1/models", self.base),
        };
        let request = self.authorized(self.http.get(url));
        let response = request.send().await.map_err(transport_error)?;
        if !response.status().is_success() {
            return Err(ProviderError::Failed(format!(
                "HTTP {} listing models",
                response.status().as_u16()
            )));
        }
        let body = read_capped(response).await?;
        let list: ModelList = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Failed(format!("unreadable model list ({e})")))?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }

    /// Whether callers may ask for `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }

    /// Asks `model` to continue `messages`.
    pub async fn complete(
        &self,
        model: &str,
        messages: &[ChatMessage],
    ) -> Result<Completion, ProviderError> {
        let response = self.send(model, messages, false).await?;
        let body = read_capped(response).await?;
        if self.wire == Wire::Anthropic {
            return anthropic::completion(&body, model);
        }
        let reply: ChatResponse = serde_json::from_slice(&body)
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
            model: reply.model.unwrap_or_else(|| model.to_owned()),
            tokens_in: usage.prompt_tokens.unwrap_or(0),
            tokens_out: usage.completion_tokens.unwrap_or(0),
            metadata: serde_json::json!({
                "providerId": reply.id,
                "finishReason": choice.finish_reason,
            }),
        })
    }
}

impl Provider {
    /// The request with the provider's credential, as its API wants it.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.api_key, self.wire) {
            (None, _) => request,
            (Some(key), Wire::OpenAi) => request.bearer_auth(key.expose_secret()),
            (Some(key), Wire::Anthropic) => request
                .header("x-api-key", key.expose_secret())
                .header("anthropic-version", anthropic::VERSION),
        }
    }

    /// Posts the request; a status other than 2xx is the provider's failure.
    async fn send(
        &self,
        model: &str,
        messages: &[ChatMessage],
        stream: bool,
    ) -> Result<reqwest::Response, ProviderError> {
        let request = match self.wire {
            Wire::OpenAi => self.http.post(&self.url).json(&ChatRequest {
                model,
                messages,
                stream,
                stream_options: stream.then(|| serde_json::json!({ "include_usage": true })),
            }),
            Wire::Anthropic => self.http.post(&self.url).json(&anthropic::Request {
                model,
                max_tokens: anthropic::MAX_TOKENS,
                messages,
                stream,
            }),
        };
        let response = self
            .authorized(request)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ProviderError::UnknownModel);
        }
        let body = read_capped(response).await?;
        let detail = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .and_then(|b| b.error)
            .map(|e| {
                let kind = e.r#type.unwrap_or_default();
                let message: String = e.message.unwrap_or_default().chars().take(200).collect();
                format!("{kind} {message}").trim().to_owned()
            })
            .unwrap_or_default();
        tracing::warn!(status = status.as_u16(), detail = %detail, "model provider error");
        Err(ProviderError::Failed(
            format!("HTTP {} {detail}", status.as_u16())
                .trim()
                .to_owned(),
        ))
    }

    /// Asks `model` to continue `messages`, streaming: each piece of the reply
    /// goes to `deltas` as it arrives (server-sent events, read by
    /// `eventsource-stream`: `data: {...}` events, multi-line ones joined,
    /// up to `data: [DONE]`); returns the whole completion. If `deltas`
    /// is closed (nobody listens any more) the request is dropped, which
    /// closes the connection and so stops the model.
    pub async fn stream(
        &self,
        model: &str,
        messages: &[ChatMessage],
        deltas: tokio::sync::mpsc::Sender<String>,
    ) -> Result<Completion, ProviderError> {
        let mut events = self
            .send(model, messages, true)
            .await?
            .bytes_stream()
            .eventsource();
        let mut content = String::new();
        let mut state = Streamed::default();
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = deltas.closed() => return Err(ProviderError::Cancelled),
            };
            let Some(event) = event else {
                let end = match self.wire {
                    Wire::OpenAi => "[DONE]",
                    Wire::Anthropic => "message_stop",
                };
                return Err(ProviderError::Failed(format!(
                    "the reply ended before {end}"
                )));
            };
            let event = event.map_err(|e| match e {
                EventStreamError::Transport(e) => transport_error(e),
                other => ProviderError::Failed(format!("unreadable event stream ({other})")),
            })?;
            let pieces = match self.wire {
                Wire::OpenAi if event.data.trim() == "[DONE]" => break,
                Wire::OpenAi => openai_event(&event.data, &mut state)?,
                Wire::Anthropic => match anthropic::event(&event.data, &mut state)? {
                    anthropic::Step::Done => break,
                    anthropic::Step::Piece(piece) => vec![piece],
                    anthropic::Step::Nothing => Vec::new(),
                },
            };
            for piece in pieces {
                if content.len() + piece.len() > MAX_REPLY_BYTES {
                    return Err(too_large());
                }
                content.push_str(&piece);
                if deltas.send(piece).await.is_err() {
                    return Err(ProviderError::Cancelled);
                }
            }
        }
        Ok(Completion {
            content,
            model: state.model.unwrap_or_else(|| model.to_owned()),
            tokens_in: state.tokens_in,
            tokens_out: state.tokens_out,
            metadata: serde_json::json!({ "providerId": state.id, "finishReason": state.finish }),
        })
    }
}

/// What a streamed reply has said so far, whatever the API.
#[derive(Default)]
struct Streamed {
    id: Option<String>,
    model: Option<String>,
    finish: Option<String>,
    tokens_in: u64,
    tokens_out: u64,
}

/// Reads one streamed Chat Completions chunk into `state`; its pieces.
fn openai_event(data: &str, state: &mut Streamed) -> Result<Vec<String>, ProviderError> {
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

/// The most a provider's reply may hold (a tenant's endpoint is untrusted:
/// it must not be able to fill the service's memory).
const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;

fn too_large() -> ProviderError {
    ProviderError::Failed("the reply is larger than 8 MiB".into())
}

/// A reply's body, read up to [`MAX_REPLY_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_REPLY_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout
    } else {
        // Not `e` itself: its text carries the provider's URL.
        tracing::warn!(error = %e.without_url(), "model provider unreachable");
        ProviderError::Failed("unreachable".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider on 127.0.0.1 that answers every completion with `body` as
    /// server-sent events.
    async fn fake(body: &'static str) -> Provider {
        let app = axum::Router::new().route(
            "/chat/completions",
            axum::routing::post(
                move || async move { ([("content-type", "text/event-stream")], body) },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = ProviderConfig {
            base_url: Some(format!("http://{addr}")),
            timeout: Duration::from_secs(5),
            ..ProviderConfig::default()
        };
        Provider::new(&config).expect("valid").expect("configured")
    }

    #[tokio::test]
    async fn streamed_events_may_span_several_data_lines() {
        let provider = fake(concat!(
            ": a comment\n",
            "data: {\"id\":\"c1\",\"model\":\"m1\",\n",
            "data: \"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "event: message\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\n",
            "data: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        ))
        .await;
        let (deltas, mut pieces) = tokio::sync::mpsc::channel(8);
        let messages = [ChatMessage {
            role: "user".into(),
            content: "hi".into(),
        }];
        let completion = provider
            .stream("m1", &messages, deltas)
            .await
            .expect("completes");
        assert_eq!(completion.content, "Hello");
        assert_eq!((completion.tokens_in, completion.tokens_out), (3, 2));
        assert_eq!(completion.model, "m1");
        let mut seen = Vec::new();
        while let Some(piece) = pieces.recv().await {
            seen.push(piece);
        }
        assert_eq!(seen, ["Hel", "lo"]);
    }

    #[tokio::test]
    async fn replies_larger_than_the_cap_are_refused() {
        let huge: &'static str = Box::leak("x".repeat(MAX_REPLY_BYTES + 1).into_boxed_str());
        let provider = fake(huge).await;
        let failed = provider.complete("m", &[]).await;
        assert!(
            matches!(&failed, Err(ProviderError::Failed(why)) if why.contains("larger than 8 MiB")),
            "{failed:?}"
        );
    }

    #[tokio::test]
    async fn a_stream_cut_before_done_fails() {
        let provider = fake("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n").await;
        let (deltas, _pieces) = tokio::sync::mpsc::channel(8);
        let failed = provider.stream("m", &[], deltas).await;
        assert!(
            matches!(&failed, Err(ProviderError::Failed(why)) if why.contains("[DONE]")),
            "{failed:?}"
        );
    }
}
