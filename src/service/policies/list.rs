//! Reading policies: one scope's list, and one by id.

use uuid::Uuid;

use super::PolicyView;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::Service;
use crate::store::policies::PolicyFilter;

/// `ListPolicies`'s input: the organization, and the scope listed (only the
/// organization's own policies, a workspace's, or a repository's).
#[derive(Debug, Clone, Copy)]
pub struct ListPolicies {
    pub org_id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub repo_id: Option<Uuid>,
}

impl Service {
    /// The live policies of one scope the caller may see, oldest first; an
    /// organization, workspace or repository they cannot reach lists none.
    pub async fn list_policies(
        &self,
        caller: &Caller,
        input: ListPolicies,
    ) -> Result<Vec<PolicyView>, ApiError> {
        if input.org_id != caller.org_id {
            return Ok(Vec::new());
        }
        let filter = PolicyFilter {
            org_id: caller.org_id,
            member: (!caller.role.is_org_admin()).then_some(caller.user_id),
            workspace_id: input.workspace_id,
            repo_id: input.repo_id,
        };
        let rows = self
            .store
            .list_policies(filter)
            .await
            .map_err(ApiError::from_store("Failed to list policies"))?;
        self.policy_views(rows).await
    }

    /// One live policy the caller may see.
    pub async fn get_policy(&self, caller: &Caller, id: Uuid) -> Result<PolicyView, ApiError> {
        let (row, _) = self.visible_policy(caller, id).await?;
        self.policy_view(row).await
    }
}
