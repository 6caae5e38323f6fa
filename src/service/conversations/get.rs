//! Getting one conversation.

use uuid::Uuid;

use super::{Conversation, conversation_not_found, may_see_conversations};
use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::Service;
use crate::store::conversations::ConversationFilter;

/// `GetConversation`'s input.
#[derive(Debug, Clone)]
pub struct GetConversation {
    pub id: Uuid,
    /// Also find it if soft-deleted.
    pub show_deleted: bool,
}

impl Service {
    /// One conversation the caller may see.
    pub async fn get_conversation(
        &self,
        caller: &Caller,
        input: GetConversation,
    ) -> Result<Conversation, ApiError> {
        let filter = ConversationFilter {
            id: Some(input.id),
            show_deleted: input.show_deleted,
            ..may_see_conversations(caller)
        };
        self.store
            .get_conversation(filter)
            .await
            .map_err(ApiError::from_store("Failed to get conversation"))?
            .ok_or_else(conversation_not_found)
    }

    /// The conversation `id` as `caller` may see it, not deleted.
    pub(crate) async fn live_conversation(
        &self,
        caller: &Caller,
        id: Uuid,
        failed: &'static str,
    ) -> Result<Conversation, ApiError> {
        self.store
            .get_conversation(live_conversation_filter(caller, id))
            .await
            .map_err(ApiError::from_store(failed))?
            .ok_or_else(conversation_not_found)
    }
}

/// The conversation `id` if `caller` may see it and it is not deleted.
pub(crate) fn live_conversation_filter(caller: &Caller, id: Uuid) -> ConversationFilter {
    ConversationFilter {
        id: Some(id),
        show_deleted: false,
        ..may_see_conversations(caller)
    }
}
