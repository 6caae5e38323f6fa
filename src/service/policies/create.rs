//! Creating a policy at the scope it names.

use uuid::Uuid;

use super::{PolicyView, may_manage};
use crate::domain::{ActionType, Caller, RiskType};
use crate::error::ApiError;
use crate::service::audit::{self, Action, Context, Scope};
use crate::service::{RequestContext, Service};
use crate::store::policies::{NewPolicy, PolicyRow};
use crate::store::types::{SqlTime, SqlUuid, now};

/// `CreatePolicy`'s input, each field already valid on its own.
#[derive(Debug, Clone)]
pub struct CreatePolicy {
    pub org_id: Uuid,
    /// A workspace or repository policy's workspace.
    pub workspace_id: Option<Uuid>,
    /// A repository policy's repository (of `workspace_id`).
    pub repo_id: Option<Uuid>,
    pub name: String,
    pub content: String,
    pub patterns: Vec<String>,
    pub risk_type: RiskType,
    pub action_type: ActionType,
}

impl Service {
    /// Creates a policy at a scope the caller manages.
    pub async fn create_policy(
        &self,
        caller: &Caller,
        input: CreatePolicy,
        ctx: &RequestContext,
    ) -> Result<PolicyView, ApiError> {
        if input.content.trim().is_empty() && input.patterns.is_empty() {
            return Err(ApiError::InvalidArgument(
                "content is required (or patterns that decide the policy)".into(),
            ));
        }
        let patterns = input.patterns.iter().map(|p| ("patterns", p.as_str()));
        crate::service::params::storable(
            [
                ("name", input.name.as_str()),
                ("content", input.content.as_str()),
            ]
            .into_iter()
            .chain(patterns),
        )?;
        if input.org_id != caller.org_id {
            return Err(ApiError::NotFound("Organization not found".into()));
        }
        let (workspace_id, access) = self
            .scope_access(caller, input.workspace_id, input.repo_id)
            .await?;
        may_manage(caller, access)?;
        let input = CreatePolicy {
            workspace_id,
            ..input
        };
        let id = Uuid::now_v7();
        let at = now();
        let stored = PolicyRow {
            id,
            org_id: input.org_id,
            workspace_id: input.workspace_id,
            repo_id: input.repo_id,
            name: input.name.clone(),
            content: input.content.clone(),
            patterns: serde_json::to_string(&input.patterns).unwrap_or_else(|_| "[]".into()),
            risk_type: input.risk_type,
            action_type: input.action_type.number(),
            created_by: caller.user_id,
            created_at: at,
            updated_by: caller.user_id,
            updated_at: at,
            deleted_at: None,
        };
        let row = NewPolicy {
            id: SqlUuid(id),
            org_id: SqlUuid(input.org_id),
            workspace_id: input.workspace_id.map(SqlUuid),
            repo_id: input.repo_id.map(SqlUuid),
            name: input.name.clone(),
            content: input.content,
            patterns: stored.patterns.clone(),
            risk_type: input.risk_type.as_str().into(),
            action_type: input.action_type.number(),
            created_by: SqlUuid(caller.user_id),
            created_at: SqlTime(at),
            updated_by: SqlUuid(caller.user_id),
            updated_at: SqlTime(at),
            deleted_at: None,
        };
        let mut data = serde_json::Map::new();
        data.insert("name".into(), input.name.into());
        data.insert("riskType".into(), input.risk_type.as_str().into());
        data.insert("actionType".into(), input.action_type.number().into());
        data.insert("repoId".into(), input.repo_id.map(|r| r.to_string()).into());
        let scope = Scope {
            org_id: input.org_id,
            workspace_id: input.workspace_id,
            user_id: caller.user_id,
        };
        let event = audit::event(scope, Context::Policy, id, Action::Created, data, ctx, at);
        self.store
            .create_policy(row, event)
            .await
            .map_err(ApiError::from_store("Failed to create the policy"))?;
        self.policy_cache.changed();
        self.policy_view(stored).await
    }

    /// A policy scope's workspace (a repository policy's may be left out:
    /// the repository's) and the caller's access to it, after checking the
    /// scope: a repository belongs to the workspace named.
    pub(super) async fn scope_access(
        &self,
        caller: &Caller,
        workspace_id: Option<Uuid>,
        repo_id: Option<Uuid>,
    ) -> Result<(Option<Uuid>, Option<crate::domain::Access>), ApiError> {
        let workspace_id = match repo_id {
            None => workspace_id,
            Some(repo_id) => {
                let repo = self.live_repo(caller, repo_id).await?;
                match (repo.workspace_id, workspace_id) {
                    (None, _) => {
                        return Err(ApiError::InvalidArgument(
                            "The repository belongs to no workspace".into(),
                        ));
                    }
                    (Some(of_repo), Some(named)) if of_repo != named => {
                        return Err(ApiError::InvalidArgument(
                            "The repository does not belong to the workspace".into(),
                        ));
                    }
                    (Some(of_repo), _) => Some(of_repo),
                }
            }
        };
        let Some(workspace_id) = workspace_id else {
            return Ok((None, None));
        };
        let (_, access) = self.workspace_access(caller, workspace_id).await?;
        Ok((Some(workspace_id), access))
    }
}
