//! Idempotency keys: a caller's retry of a create with the same key replays
//! the first reply instead of creating again; the same key with another
//! request is 409. Keys are per caller and remembered for the service's TTL.

use chrono::Utc;
use uuid::Uuid;

use super::Service;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::protocol::MAX_IDEMPOTENCY_KEY;
use crate::store::conversations::{ConversationFilter, ConversationRow, Visibility};

/// What a create that fails inside the service says.
pub(super) const CREATE_FAILED: &str = "Failed to create conversation";

/// A caller's idempotency key: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// From the values of every `idempotency-key` header (or metadata
    /// entry): none, or exactly one valid key.
    pub fn from_values<'a>(
        mut values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Option<IdempotencyKey>, ApiError> {
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(ApiError::InvalidArgument(
                "Idempotency-Key must be given once".into(),
            )),
            (Some(value), None) => match std::str::from_utf8(value) {
                Ok(key)
                    if (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len())
                        && key.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    Ok(Some(IdempotencyKey(key.to_owned())))
                }
                _ => Err(ApiError::InvalidArgument(
                    "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
                )),
            },
        }
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What identifies a create request, to tell a retry from another request.
pub(super) fn create_fingerprint(repo_id: Uuid) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::new()
        .chain_update(b"CreateConversation\n")
        .chain_update(repo_id.as_bytes())
        .finalize()
        .into()
}

/// The stored form of a create's reply.
pub(super) fn encode_reply(reply: &ConversationRow) -> Vec<u8> {
    serde_json::to_vec(reply).unwrap_or_default()
}

impl Service {
    /// The reply first sent for the caller's idempotency key `key`, if the
    /// key is live; 409 if it was used for a different request.
    pub(super) async fn replay(
        &self,
        caller: &Caller,
        key: &IdempotencyKey,
        fingerprint: &[u8; 32],
    ) -> Result<Option<ConversationRow>, ApiError> {
        let Some(stored) = self
            .store
            .find_idempotency_key(caller.user_id, key.as_str().to_owned(), Utc::now())
            .await
            .map_err(ApiError::from_store(CREATE_FAILED))?
        else {
            return Ok(None);
        };
        if stored.fingerprint != fingerprint {
            return Err(ApiError::AlreadyExists(
                "Idempotency-Key was already used for a different request".into(),
            ));
        }
        let reply = match serde_json::from_slice::<ConversationRow>(&stored.reply) {
            Ok(reply) => reply,
            // A key stored by an earlier version (its reply in another
            // encoding): the conversation it created, as it is now.
            Err(_) => self
                .store
                .get_conversation(ConversationFilter {
                    id: Some(stored.conversation_id),
                    show_deleted: true,
                    ..ConversationFilter::visible(caller.org_id, Visibility::Organization)
                })
                .await
                .map_err(ApiError::from_store(CREATE_FAILED))?
                .ok_or_else(|| ApiError::Internal {
                    public: CREATE_FAILED,
                    detail: "idempotency key of a conversation that is gone".into(),
                })?,
        };
        tracing::info!(conversation_id = %reply.id, "idempotent replay");
        Ok(Some(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_visible_ascii_value() {
        let key = |v: &[u8]| IdempotencyKey::from_values([v].into_iter());
        assert_eq!(
            key(b"order-1").expect("valid"),
            Some(IdempotencyKey("order-1".into()))
        );
        assert!(key(b"").is_err());
        assert!(key(b"has space").is_err());
        assert!(key(&[b'x'; 256]).is_err());
        assert!(
            IdempotencyKey::from_values([b"a".as_slice(), b"b".as_slice()].into_iter()).is_err()
        );
        assert_eq!(
            IdempotencyKey::from_values(std::iter::empty()).expect("none"),
            None
        );
    }
}
