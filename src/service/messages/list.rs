//! Listing a conversation's messages.

use uuid::Uuid;

use super::MessagePage;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::Service;
use crate::service::params::Page;

/// `ListMessages`'s input.
#[derive(Debug, Clone)]
pub struct ListMessages {
    pub conversation_id: Uuid,
    pub page: Page,
}

impl Service {
    /// A page of the messages of a conversation the caller may see (not
    /// deleted), oldest first.
    pub async fn list_messages(
        &self,
        caller: &Caller,
        input: ListMessages,
    ) -> Result<MessagePage, ApiError> {
        const FAILED: &str = "Failed to list messages";
        let id = input.conversation_id;
        let conversation = self.live_conversation(caller, id, FAILED).await?;
        let (rows, total) = self
            .store
            .list_messages(id, input.page.take, input.page.skip)
            .await
            .map_err(ApiError::from_store(FAILED))?;
        Ok(MessagePage {
            messages: rows,
            title: conversation.title,
            total: u64::try_from(total).unwrap_or_default(),
        })
    }
}
