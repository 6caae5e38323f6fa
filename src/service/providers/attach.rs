//! Attaching repositories to a configuration (a prompt on them may then use
//! it) and detaching them. Only repositories of the configuration's own
//! workspace can be attached.

use uuid::Uuid;

use super::may_manage_providers;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::audit::{self, Action, Context, Scope};
use crate::service::{RequestContext, Service};
use crate::store::types::now;

/// `AttachRepo`'s input.
#[derive(Debug, Clone)]
pub struct AttachRepo {
    pub id: Uuid,
    pub repo_id: Uuid,
}

/// `DetachRepo`'s input.
pub type DetachRepo = AttachRepo;

impl Service {
    /// Attaches a repository of the configuration's workspace (again: no
    /// change).
    pub async fn attach_repo(
        &self,
        caller: &Caller,
        input: AttachRepo,
        ctx: &RequestContext,
    ) -> Result<(), ApiError> {
        let (row, access) = self.visible_provider(caller, input.id).await?;
        may_manage_providers(caller, access)?;
        let repo = self.live_repo(caller, input.repo_id).await?;
        if repo.workspace_id != Some(row.workspace_id) {
            return Err(ApiError::FailedPrecondition(
                "Repository does not belong to the AI configuration's workspace".into(),
            ));
        }
        let event = self.attachment_event(caller, &row, repo.id, Action::Attached, ctx);
        self.store
            .attach_repo(row.id, repo.id, now(), event)
            .await
            .map_err(ApiError::from_store("Failed to attach the repository"))?;
        self.configurations.changed();
        Ok(())
    }

    /// Detaches a repository; 404 if it was not attached.
    pub async fn detach_repo(
        &self,
        caller: &Caller,
        input: DetachRepo,
        ctx: &RequestContext,
    ) -> Result<(), ApiError> {
        let (row, access) = self.visible_provider(caller, input.id).await?;
        may_manage_providers(caller, access)?;
        let event = self.attachment_event(caller, &row, input.repo_id, Action::Detached, ctx);
        let detached = self
            .store
            .detach_repo(row.id, input.repo_id, event)
            .await
            .map_err(ApiError::from_store("Failed to detach the repository"))?;
        self.configurations.changed();
        if detached {
            Ok(())
        } else {
            Err(ApiError::NotFound(
                "Repository is not attached to this AI configuration".into(),
            ))
        }
    }

    fn attachment_event(
        &self,
        caller: &Caller,
        row: &crate::store::providers::AiLlmRow,
        repo_id: Uuid,
        action: Action,
        ctx: &RequestContext,
    ) -> crate::store::conversations::NewEvent {
        let mut data = serde_json::Map::new();
        data.insert("repoId".into(), repo_id.to_string().into());
        let scope = Scope {
            org_id: row.org_id,
            workspace_id: Some(row.workspace_id),
            user_id: caller.user_id,
        };
        audit::event(scope, Context::AiLlm, row.id, action, data, ctx, now())
    }
}
