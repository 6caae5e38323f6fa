//! Listing the configurations a caller may see.

use std::collections::HashMap;

use uuid::Uuid;

use super::ProviderView;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::Service;

/// `ListProviders`'s input.
#[derive(Debug, Clone, Default)]
pub struct ListProviders {
    /// Only this workspace's (an unreachable one gives an empty list).
    pub workspace_id: Option<Uuid>,
}

impl Service {
    /// The configurations of the workspaces the caller reaches (organization
    /// administrators: all of their organization's), by name, with their
    /// repositories.
    pub async fn list_providers(
        &self,
        caller: &Caller,
        input: ListProviders,
    ) -> Result<Vec<ProviderView>, ApiError> {
        const FAILED: &str = "Failed to list AI configurations";
        let member = (!caller.role.is_org_admin()).then_some(caller.user_id);
        let rows = self
            .store
            .list_ai_llms(caller.org_id, member, input.workspace_id)
            .await
            .map_err(ApiError::from_store(FAILED))?;
        let repos = self
            .store
            .attached_repos(rows.iter().map(|r| r.id).collect())
            .await
            .map_err(ApiError::from_store(FAILED))?;
        let mut by_config: HashMap<Uuid, Vec<_>> = HashMap::new();
        for repo in repos {
            by_config.entry(repo.ai_llm_id).or_default().push(repo);
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let repos = by_config.remove(&row.id).unwrap_or_default();
                ProviderView::of(row, repos)
            })
            .collect())
    }
}
