//! Changing and deleting a policy; its scope never changes.

use uuid::Uuid;

use super::{PolicyView, may_manage, policy_not_found};
use crate::domain::{ActionType, Caller, RiskType};
use crate::error::ApiError;
use crate::service::audit::{self, Action, Context, Scope};
use crate::service::{RequestContext, Service};
use crate::store::policies::{PolicyChanges, PolicyRow};
use crate::store::types::{SqlTime, SqlUuid, now};

/// `UpdatePolicy`'s input: what changes (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct UpdatePolicy {
    pub id: Uuid,
    pub name: Option<String>,
    pub content: Option<String>,
    pub patterns: Option<Vec<String>>,
    pub risk_type: Option<RiskType>,
    pub action_type: Option<ActionType>,
}

impl UpdatePolicy {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.content.is_none()
            && self.patterns.is_none()
            && self.risk_type.is_none()
            && self.action_type.is_none()
    }
}

impl Service {
    /// Changes a live policy the caller manages; records who and when.
    pub async fn update_policy(
        &self,
        caller: &Caller,
        input: UpdatePolicy,
        ctx: &RequestContext,
    ) -> Result<PolicyView, ApiError> {
        if input.is_empty() {
            return Err(ApiError::InvalidArgument(
                "Nothing to update: give name, content, patterns, riskType or actionType".into(),
            ));
        }
        let patterns = input
            .patterns
            .iter()
            .flatten()
            .map(|p| ("patterns", p.as_str()));
        crate::service::params::storable(
            [("name", &input.name), ("content", &input.content)]
                .into_iter()
                .filter_map(|(n, v)| Some((n, v.as_deref()?)))
                .chain(patterns),
        )?;
        let (row, access) = self.visible_policy(caller, input.id).await?;
        may_manage(caller, access)?;
        let kept_patterns = row.pattern_list().unwrap_or_default();
        let patterns = input.patterns.as_ref().unwrap_or(&kept_patterns);
        let content = input.content.as_ref().unwrap_or(&row.content);
        if content.trim().is_empty() && patterns.is_empty() {
            return Err(ApiError::InvalidArgument(
                "content is required (or patterns that decide the policy)".into(),
            ));
        }
        let at = now();
        let mut data = serde_json::Map::new();
        for (field, changed) in [
            ("name", input.name.is_some()),
            ("content", input.content.is_some()),
            ("patterns", input.patterns.is_some()),
            ("riskType", input.risk_type.is_some()),
            ("actionType", input.action_type.is_some()),
        ] {
            if changed {
                data.insert(field.into(), true.into());
            }
        }
        let changes = PolicyChanges {
            name: input.name,
            content: input.content,
            patterns: input
                .patterns
                .map(|p| serde_json::to_string(&p).unwrap_or_else(|_| "[]".into())),
            risk_type: input.risk_type.map(|r| r.as_str().to_owned()),
            action_type: input.action_type.map(ActionType::number),
            updated_by: SqlUuid(caller.user_id),
            updated_at: SqlTime(at),
        };
        let data = serde_json::Map::from_iter([("changed".to_owned(), data.into())]);
        let event = policy_event(&row, caller, Action::Updated, data, ctx, at);
        let updated = self
            .store
            .update_policy(row.id, changes, event)
            .await
            .map_err(ApiError::from_store("Failed to update the policy"))?;
        if !updated {
            return Err(policy_not_found());
        }
        self.policy_cache.changed();
        let updated = self
            .store
            .find_policy(row.id)
            .await
            .map_err(ApiError::from_store("Failed to read the policy"))?
            .ok_or_else(policy_not_found)?;
        self.policy_view(updated).await
    }

    /// Deletes a live policy the caller manages (softly: no longer enforced
    /// or listed; its violations stay).
    pub async fn delete_policy(
        &self,
        caller: &Caller,
        id: Uuid,
        ctx: &RequestContext,
    ) -> Result<(), ApiError> {
        let (row, access) = self.visible_policy(caller, id).await?;
        may_manage(caller, access)?;
        let at = now();
        let mut data = serde_json::Map::new();
        data.insert("name".into(), row.name.clone().into());
        let event = policy_event(&row, caller, Action::Deleted, data, ctx, at);
        let deleted = self
            .store
            .delete_policy(id, caller.user_id, at, event)
            .await
            .map_err(ApiError::from_store("Failed to delete the policy"))?;
        if !deleted {
            return Err(policy_not_found());
        }
        self.policy_cache.changed();
        Ok(())
    }
}

/// The audit event of a change to `row`.
fn policy_event(
    row: &PolicyRow,
    caller: &Caller,
    action: Action,
    data: serde_json::Map<String, serde_json::Value>,
    ctx: &RequestContext,
    at: chrono::DateTime<chrono::Utc>,
) -> crate::store::conversations::NewEvent {
    let scope = Scope {
        org_id: row.org_id,
        workspace_id: row.workspace_id,
        user_id: caller.user_id,
    };
    audit::event(scope, Context::Policy, row.id, action, data, ctx, at)
}
