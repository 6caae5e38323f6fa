//! Listing conversations, newest first.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ConversationPage, may_see_conversations};
use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::Service;
use crate::service::params::Page;
use crate::store::conversations::ConversationFilter;

/// `ListConversations`'s input; every filter narrows what the caller may see.
#[derive(Debug, Clone)]
pub struct ListConversations {
    pub page: Page,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created strictly before.
    pub until: Option<DateTime<Utc>>,
    pub user_id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub repo_id: Option<Uuid>,
    pub show_deleted: bool,
}

impl Service {
    /// A page of the conversations the caller may see, newest first.
    pub async fn list_conversations(
        &self,
        caller: &Caller,
        input: ListConversations,
    ) -> Result<ConversationPage, ApiError> {
        if let (Some(from), Some(until)) = (input.from, input.until)
            && from >= until
        {
            // An empty range: nothing was created in it (as with a SQL
            // BETWEEN whose ends are swapped).
            return Ok(ConversationPage {
                conversations: Vec::new(),
                total: 0,
            });
        }
        let filter = ConversationFilter {
            from: input.from,
            until: input.until,
            created_by: input.user_id,
            workspace_id: input.workspace_id,
            repo_id: input.repo_id,
            show_deleted: input.show_deleted,
            ..may_see_conversations(caller)
        };
        let (rows, total) = self
            .store
            .list_conversations(filter, input.page.take, input.page.skip)
            .await
            .map_err(ApiError::from_store("Failed to list conversations"))?;
        Ok(ConversationPage {
            conversations: rows,
            total: u64::try_from(total).unwrap_or_default(),
        })
    }
}
