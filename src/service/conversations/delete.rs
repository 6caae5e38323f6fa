//! Deleting a conversation, softly or for good, with its audit event.

use uuid::Uuid;

use super::{conversation_not_found, may_delete_conversation};
use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::audit::{self, Action, Context, Scope};
use crate::service::{RequestContext, Service};
use crate::store::conversations::ConversationFilter;
use crate::store::types::now;

/// `DeleteConversation`'s input.
#[derive(Debug, Clone)]
pub struct DeleteConversation {
    pub id: Uuid,
    /// Remove the row instead of marking it deleted.
    pub hard: bool,
}

impl Service {
    /// Deletes a conversation the caller may delete, and writes its
    /// `deleted` audit event in the same transaction.
    pub async fn delete_conversation(
        &self,
        caller: &Caller,
        input: DeleteConversation,
        ctx: &RequestContext,
    ) -> Result<(), ApiError> {
        let filter = ConversationFilter {
            id: Some(input.id),
            show_deleted: true,
            ..may_delete_conversation(caller)
        };
        let (hard, user_id, ctx_owned) = (input.hard, caller.user_id, ctx.clone());
        let deleted = self
            .store
            .delete_conversation(filter, hard, move |row| {
                let mut data = serde_json::Map::new();
                data.insert("hardDelete".into(), hard.into());
                data.insert("repoId".into(), row.repo_id.to_string().into());
                let scope = Scope {
                    org_id: row.org_id,
                    workspace_id: Some(row.workspace_id),
                    user_id,
                };
                audit::event(
                    scope,
                    Context::Conversation,
                    row.id,
                    Action::Deleted,
                    data,
                    &ctx_owned,
                    now(),
                )
            })
            .await
            .map_err(ApiError::from_store("Failed to delete conversation"))?;
        if !deleted {
            return Err(conversation_not_found());
        }
        tracing::info!(conversation_id = %input.id, hard, user_id = %caller.user_id,
            request_id = %ctx.request_id, "conversation deleted");
        Ok(())
    }
}
