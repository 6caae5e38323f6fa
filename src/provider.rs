//! The model provider: any OpenAI-compatible Chat Completions endpoint
//! (OpenAI, vLLM, Ollama, llama.cpp's server, ...), as the operator
//! configures it. Its API key never leaves this module: not in a reply, not in
//! a log, not in `Debug`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the provider is reached.
#[derive(Clone, Default)]
pub struct ProviderConfig {
    /// The API base, such as `https://api.openai.com/v1` or
    /// `http://127.0.0.1:11434/v1`; `/chat/completions` is appended.
    pub base_url: Option<String>,
    /// Sent as `Authorization: Bearer ...` when set.
    pub api_key: Option<String>,
    /// The models callers may ask for; any model when empty.
    pub models: Vec<String>,
    /// Longest a completion may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("models", &self.models)
            .field("timeout", &self.timeout)
            .finish()
    }
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
}

/// A configured provider.
pub struct Provider {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    models: Vec<String>,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
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
            url,
            api_key: config.api_key.clone(),
            models: config.models.clone(),
        }))
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
        let mut request = self.http.post(&self.url).json(&ChatRequest {
            model,
            messages,
            stream: false,
        });
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport_error)?;
        if !status.is_success() {
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
            return Err(ProviderError::Failed(
                format!("HTTP {} {detail}", status.as_u16())
                    .trim()
                    .to_owned(),
            ));
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

fn transport_error(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout
    } else {
        // Not `e` itself: its text carries the provider's URL.
        tracing::warn!(error = %e.without_url(), "model provider unreachable");
        ProviderError::Failed("unreachable".into())
    }
}
