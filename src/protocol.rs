//! Names and limits both transports share: header (and metadata) names, the
//! body limit, page sizes. Each adapter imports them from here, so REST and
//! gRPC cannot drift apart.

/// The header (and gRPC metadata key) of the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// The header (and gRPC metadata key) of an idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header (and gRPC metadata key) of the caller's credentials.
pub const AUTHORIZATION: &str = "authorization";

/// The largest request body (REST) or message (gRPC) accepted, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The rpcs that call a model provider, limited by the provider's time
/// rather than the request timeout (REST: `http::routes::provider_calls`).
pub const PROVIDER_RPCS: [&str; 4] = [
    "/flashback.conversation.v1.ConversationService/PromptConversation",
    "/flashback.conversation.v1.ConversationService/StreamPromptConversation",
    "/flashback.ai.v1.ProviderService/ValidateProvider",
    "/flashback.ai.v1.ProviderService/ListModels",
];

/// The default page size of a list.
pub const DEFAULT_TAKE: i64 = 50;

/// The largest page size of a list.
pub const MAX_TAKE: i64 = 100;

/// The longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A request id worth keeping: 1 to 128 visible ASCII characters.
pub fn is_sane_request_id(v: &str) -> bool {
    (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
}

/// The request id of a call: the caller's own when sane, else a new UUIDv7.
pub fn request_id_or_new(given: Option<&str>) -> String {
    given
        .filter(|v| is_sane_request_id(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert!(is_sane_request_id("abc-123"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("has space"));
        assert!(!is_sane_request_id(&"x".repeat(129)));
        assert_eq!(request_id_or_new(Some("abc")), "abc");
        assert_eq!(request_id_or_new(Some("a b")).len(), 36);
        assert_eq!(request_id_or_new(None).len(), 36);
    }
}
