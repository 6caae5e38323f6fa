//! Deleting a configuration, for good; refused while repositories use it.

use uuid::Uuid;

use super::{may_manage_providers, provider_not_found};
use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::audit::{self, Action, Context, Scope};
use crate::service::{RequestContext, Service};
use crate::store::providers::Deleted;
use crate::store::types::now;

impl Service {
    /// Deletes a configuration of a workspace the caller manages, unless a
    /// repository is attached to it (403, naming how many).
    pub async fn delete_provider(
        &self,
        caller: &Caller,
        id: Uuid,
        ctx: &RequestContext,
    ) -> Result<(), ApiError> {
        let (row, access) = self.visible_provider(caller, id).await?;
        may_manage_providers(caller, access)?;
        let mut data = serde_json::Map::new();
        data.insert("name".into(), row.name.clone().into());
        let scope = Scope {
            org_id: row.org_id,
            workspace_id: Some(row.workspace_id),
            user_id: caller.user_id,
        };
        let event = audit::event(scope, Context::AiLlm, id, Action::Deleted, data, ctx, now());
        match self
            .store
            .delete_ai_llm(id, event)
            .await
            .map_err(ApiError::from_store(
                "Failed to delete the AI configuration",
            ))? {
            Deleted::Done => Ok(()),
            Deleted::Missing => Err(provider_not_found()),
            Deleted::InUse(n) => Err(ApiError::PermissionDenied(format!(
                "AI configuration is in use by {n} {}; detach {} first",
                if n == 1 { "repository" } else { "repositories" },
                if n == 1 { "it" } else { "them" },
            ))),
        }
    }
}
