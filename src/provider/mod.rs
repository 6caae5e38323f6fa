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
    /// `user`, `assistant` or `system`.
    pub role: &'static str,
    pub content: Text,
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
    /// The endpoint serves no model list (its 404 or 405 to `GET /models`,
    /// as Bedrock's `bedrock-runtime` OpenAI-compatible endpoint answers).
    #[error("The model provider lists no models")]
    NoModelList,
}

impl ProviderError {
    /// A short, bounded name of the failure, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ProviderError::Timeout => "timeout",
            ProviderError::Failed(_) => "failed",
            ProviderError::UnknownModel => "unknown_model",
            ProviderError::Cancelled => "cancelled",
            ProviderError::NoModelList => "no_model_list",
        }
    }
}

mod anthropic;
mod openai;
mod reply;
mod text;

pub use text::Text;

use openai::ChatRequest;
use reply::{MAX_REPLY_BYTES, error_detail, read_capped, redact, too_large, transport_error};

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI's Chat Completions (and every OpenAI-compatible endpoint).
    OpenAi,
    /// Chat Completions at Gemini's OpenAI-compatible endpoint, whose model
    /// list names models `models/<id>` while its completions take `<id>`.
    Gemini,
    /// Chat Completions at Bedrock's OpenAI-compatible endpoint, with a
    /// Bedrock API key; `bedrock-runtime` serves no model list (404), and
    /// errors come AWS-style (`{"Message": ...}`).
    Bedrock,
    /// Anthropic's Messages API.
    Anthropic,
}

impl Wire {
    /// Whether this is OpenAI's Chat Completions, in any dialect.
    fn chat_completions(self) -> bool {
        self != Wire::Anthropic
    }
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
    /// OpenAI's: Unix seconds.
    created: Option<i64>,
    /// Anthropic's: RFC 3339.
    created_at: Option<String>,
}

/// A model a provider offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// As completions take it.
    pub id: String,
    /// When the provider made it available (Unix seconds), if it says.
    pub created: Option<i64>,
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
        let url = if wire.chat_completions() {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/messages")
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

    /// The models the provider offers (`GET {base}/models`, Anthropic's
    /// `GET {base}/v1/models`), as its completions take them.
    pub async fn list_models(&self) -> Result<Vec<ModelInfo>, ProviderError> {
        let url = match self.wire {
            Wire::Anthropic => format!("{}/v1/models", self.base),
            _ => format!("{}/models", self.base),
        };
        let request = self.authorized(self.http.get(url));
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        if matches!(status.as_u16(), 404 | 405) {
            return Err(ProviderError::NoModelList);
        }
        if !status.is_success() {
            return Err(self.failure(status, response, "listing models").await);
        }
        let body = read_capped(response).await?;
        let list: ModelList = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Failed(format!("unreadable model list ({e})")))?;
        Ok(list
            .data
            .into_iter()
            .map(|m| ModelInfo {
                created: m.created.or_else(|| {
                    let at = chrono::DateTime::parse_from_rfc3339(m.created_at.as_deref()?);
                    at.ok().map(|at| at.timestamp())
                }),
                id: match self.wire {
                    Wire::Gemini => {
                        m.id.strip_prefix("models/")
                            .map(str::to_owned)
                            .unwrap_or(m.id)
                    }
                    _ => m.id,
                },
            })
            .collect())
    }

    /// Checks the credentials of an endpoint that lists no models: an empty
    /// completion request, which a provider refuses as invalid (a 4xx other
    /// than 401, 403 or 429) once it has accepted the key, and as
    /// unauthorized when it has not.
    pub async fn probe(&self) -> Result<(), ProviderError> {
        let request = self.http.post(&self.url).json(&ChatRequest {
            model: "",
            messages: &[],
            stream: false,
            stream_options: None,
            response_format: None,
        });
        let response = self
            .authorized(request)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let accepted = status.is_success()
            || (status.is_client_error() && !matches!(status.as_u16(), 401 | 403 | 429));
        if accepted {
            return Ok(());
        }
        Err(self
            .failure(status, response, "checking the credentials")
            .await)
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
        self.complete_as(model, messages, None).await
    }

    /// Asks `model` to continue `messages` with a reply of the JSON
    /// `response_format` names (Chat Completions' structured outputs; the
    /// Messages API has none, and gets the instructions alone).
    pub async fn complete_as(
        &self,
        model: &str,
        messages: &[ChatMessage],
        response_format: Option<&serde_json::Value>,
    ) -> Result<Completion, ProviderError> {
        let response = self.send(model, messages, false, response_format).await?;
        let body = read_capped(response).await?;
        if !self.wire.chat_completions() {
            return anthropic::completion(&body, model);
        }
        openai::completion(&body, model)
    }
}

impl Provider {
    /// The API key's text, to keep it out of what a provider's errors say.
    fn key(&self) -> Option<&str> {
        self.api_key.as_ref().map(|k| k.expose_secret())
    }

    /// The request with the provider's credential, as its API wants it.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.api_key, self.wire) {
            (None, _) => request,
            (Some(key), Wire::Anthropic) => request
                .header("x-api-key", key.expose_secret())
                .header("anthropic-version", anthropic::VERSION),
            (Some(key), _) => request.bearer_auth(key.expose_secret()),
        }
    }

    /// Posts the request; a status other than 2xx is the provider's failure.
    async fn send(
        &self,
        model: &str,
        messages: &[ChatMessage],
        stream: bool,
        response_format: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, ProviderError> {
        let request = if self.wire.chat_completions() {
            self.http.post(&self.url).json(&ChatRequest {
                model,
                messages,
                stream,
                stream_options: stream.then(|| serde_json::json!({ "include_usage": true })),
                response_format,
            })
        } else {
            self.http.post(&self.url).json(&anthropic::Request {
                model,
                max_tokens: anthropic::MAX_TOKENS,
                messages,
                stream,
            })
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
        Err(self.failure(status, response, "").await)
    }

    /// A reply other than 2xx as a failure naming the provider's status and
    /// error (read from any of the shapes providers answer in), never the
    /// key, even where a provider quotes it back.
    async fn failure(
        &self,
        status: reqwest::StatusCode,
        response: reqwest::Response,
        doing: &str,
    ) -> ProviderError {
        let detail = match read_capped(response).await {
            Ok(body) => error_detail(&body, self.key()),
            Err(e) => return e,
        };
        tracing::warn!(status = status.as_u16(), detail = %detail, "model provider error");
        ProviderError::Failed(
            format!("HTTP {} {doing} {detail}", status.as_u16())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        )
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
            .send(model, messages, true, None)
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
                    Wire::Anthropic => "message_stop",
                    _ => "[DONE]",
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
                Wire::Anthropic => {
                    match anthropic::event(&event.data, &mut state).map_err(|e| match e {
                        ProviderError::Failed(why) => {
                            ProviderError::Failed(redact(&why, self.key()))
                        }
                        other => other,
                    })? {
                        anthropic::Step::Done => break,
                        anthropic::Step::Piece(piece) => vec![piece],
                        anthropic::Step::Nothing => Vec::new(),
                    }
                }
                _ if event.data.trim() == "[DONE]" => break,
                _ => openai::event(&event.data, &mut state)?,
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
            role: "user",
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
