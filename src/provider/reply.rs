//! Reading what a provider answers: bodies up to a cap, transport failures,
//! and the error shapes providers use.

use super::ProviderError;

/// The most a provider's reply may hold (a tenant's endpoint is untrusted:
/// it must not be able to fill the service's memory).
pub const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;

pub fn too_large() -> ProviderError {
    ProviderError::Failed("the reply is larger than 8 MiB".into())
}

/// A reply's body, read up to [`MAX_REPLY_BYTES`].
pub async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
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

pub fn transport_error(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout
    } else {
        // Not `e` itself: its text carries the provider's URL.
        tracing::warn!(error = %e.without_url(), "model provider unreachable");
        ProviderError::Failed("unreachable".into())
    }
}

/// What a provider's error body says, in a line of at most 200 characters
/// of message: OpenAI's and Anthropic's `{"error": {"type", "message"}}`,
/// Gemini's `{"error": {"status", "message"}}` (also inside a one-element
/// array), AWS's `{"message"}` or `{"Message"}`; empty for anything else.
/// `key`, where the message quotes it, becomes `[redacted]` (before the
/// message is cut, so no part of it survives the cut).
pub fn error_detail(body: &[u8], key: Option<&str>) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let value = value.get(0).unwrap_or(&value);
    let error = value
        .get("error")
        .filter(|e| e.is_object())
        .unwrap_or(value);
    let text = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| error.get(*n).and_then(|v| v.as_str()))
            .unwrap_or_default()
    };
    let kind = text(&["type", "status", "__type"]);
    let message = redact(text(&["message", "Message"]), key);
    let message: String = message.chars().take(200).collect();
    format!("{kind} {message}").trim().to_owned()
}

/// `text` without `key` in it.
pub fn redact(text: &str, key: Option<&str>) -> String {
    match key {
        Some(key) if !key.is_empty() => text.replace(key, "[redacted]"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_read_in_every_shape_providers_use() {
        for (body, read) in [
            (
                r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error"}}"#,
                "invalid_request_error Incorrect API key",
            ),
            (
                r#"[{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}]"#,
                "RESOURCE_EXHAUSTED Resource exhausted",
            ),
            (
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                "overloaded_error Overloaded",
            ),
            (
                r#"{"Message":"Authentication failed"}"#,
                "Authentication failed",
            ),
            (r#"{"message":"Too many requests"}"#, "Too many requests"),
            ("<html>Bad gateway</html>", ""),
            (r#"{"error":"just a string"}"#, ""),
        ] {
            assert_eq!(error_detail(body.as_bytes(), None), read, "{body}");
        }
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(500));
        assert_eq!(error_detail(long.as_bytes(), None).len(), 200);
        // A key that straddles the cut is redacted before it.
        let quoted = format!(r#"{{"message":"{}sk-secret-key"}}"#, "x".repeat(195));
        let read = error_detail(quoted.as_bytes(), Some("sk-secret-key"));
        assert!(
            read.ends_with("xx[redacted]") || !read.contains("sk-"),
            "{read}"
        );
        assert!(!read.contains("sk-sec"), "{read}");
    }
}
