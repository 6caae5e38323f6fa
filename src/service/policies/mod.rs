//! Governance policies: natural-language rules at organization, workspace
//! or repository scope (lower scopes add rules, never weaken them), with our
//! extension of `patterns` (regular expressions decided without a model).
//! Who may see and manage them, and what a valid policy is, are named here;
//! enforcing them on prompts is `enforce`, the model that judges `judge`.

mod create;
mod enforce;
mod judge;
mod list;
mod update;
mod violations;
mod webhooks;

pub use create::CreatePolicy;
pub use enforce::{PolicyCache, PolicyConfig, Stage, TurnChecks, TurnFacts};
pub use list::ListPolicies;
pub use update::UpdatePolicy;
pub use violations::{ListViolations, ViolationView};
pub use webhooks::{
    DELIVERY_HEADER, Deliverer, DeliveryView, SIGNATURE_HEADER, WebhookView, deliver_webhooks, sign,
};

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Access, ActionType, Caller, RiskType};
use crate::error::ApiError;
use crate::service::Service;
use crate::store::policies::{PersonRow, PolicyRow};

/// The most patterns a policy may carry, and the longest one.
const MAX_PATTERNS: usize = 20;
const MAX_PATTERN_LEN: usize = 1000;
/// The most memory one compiled pattern may take.
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// The longest `content`.
const MAX_CONTENT: usize = 10_000;

/// A person, as a policy names who created and last changed it.
#[derive(Debug, Clone, Default)]
pub struct Person {
    pub id: Uuid,
    pub name: String,
    pub last_name: String,
    pub email: String,
}

/// A policy as callers see it.
#[derive(Debug, Clone)]
pub struct PolicyView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub content: String,
    pub patterns: Vec<String>,
    pub risk_type: RiskType,
    pub action_type: ActionType,
    pub created_by: Person,
    pub created_at: DateTime<Utc>,
    pub updated_by: Person,
    pub updated_at: DateTime<Utc>,
    /// The workspace (and its name) of a workspace or repository policy.
    pub workspace: Option<(Uuid, String)>,
    /// The repository (and its name) of a repository policy.
    pub repo: Option<(Uuid, String)>,
}

/// What an id that names no policy the caller may see answers.
fn policy_not_found() -> ApiError {
    ApiError::NotFound("Policy not found".into())
}

/// A policy's risk: one of the platform's names.
pub fn risk_type(value: Option<&str>) -> Result<RiskType, ApiError> {
    let value = value.ok_or_else(|| ApiError::InvalidArgument("riskType is required".into()))?;
    value
        .parse()
        .map_err(|_| ApiError::InvalidArgument("riskType must be one of LOW, MEDIUM, HIGH".into()))
}

/// A violation's severity, as a filter names it.
pub fn severity(value: &str) -> Result<RiskType, ApiError> {
    value
        .parse()
        .map_err(|_| ApiError::InvalidArgument("severity must list LOW, MEDIUM or HIGH".into()))
}

/// A policy's action: 0 log, 1 alert, 2 block.
pub fn action_type(value: Option<i64>) -> Result<ActionType, ApiError> {
    let value = value.ok_or_else(|| ApiError::InvalidArgument("actionType is required".into()))?;
    ActionType::from_number(value).ok_or_else(|| {
        ApiError::InvalidArgument("actionType must be 0 (log), 1 (alert) or 2 (block)".into())
    })
}

/// A policy's content: at most 10,000 characters (it may be empty only
/// when patterns decide the policy).
pub fn content(value: Option<String>) -> Result<String, ApiError> {
    let value = value.unwrap_or_default();
    if value.chars().count() > MAX_CONTENT {
        return Err(ApiError::InvalidArgument(
            "content must be at most 10000 characters".into(),
        ));
    }
    Ok(value)
}

/// A policy's patterns: at most 20 regular expressions of at most 1000
/// characters each, each of which compiles within the size limit.
pub fn patterns(values: Vec<String>) -> Result<Vec<String>, ApiError> {
    if values.len() > MAX_PATTERNS {
        return Err(ApiError::InvalidArgument(
            "patterns may hold at most 20 regular expressions".into(),
        ));
    }
    for p in &values {
        if p.is_empty() || p.chars().count() > MAX_PATTERN_LEN {
            return Err(ApiError::InvalidArgument(format!(
                "pattern {p:?} must be 1 to 1000 characters"
            )));
        }
        compile(p).map_err(|e| {
            let why = e.to_string();
            let why = why.lines().last().unwrap_or_default().trim().to_owned();
            ApiError::InvalidArgument(format!(
                "pattern {p:?} is not a valid regular expression: {why}"
            ))
        })?;
    }
    Ok(values)
}

/// A pattern, compiled within the size limit.
fn compile(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
}

/// Who may manage a policy of a scope: organization administrators and
/// owners everywhere; a workspace's ADMIN members its workspace's and its
/// repositories' policies.
/// (`access` is the caller's to the policy's workspace: none for an
/// organization policy, which only organization administrators manage.)
fn may_manage(caller: &Caller, access: Option<Access>) -> Result<(), ApiError> {
    if caller.role.is_org_admin() || access == Some(Access::Admin) {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(
            "Insufficient permissions to manage policies of this scope".into(),
        ))
    }
}

impl Service {
    /// Policy `id` as `caller` may see it (live only), with their access to
    /// its workspace, if it has one.
    async fn visible_policy(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<(PolicyRow, Option<Access>), ApiError> {
        let row = self
            .store
            .find_policy(id)
            .await
            .map_err(ApiError::from_store("Failed to read the policy"))?
            .filter(|p| p.org_id == caller.org_id && p.deleted_at.is_none())
            .ok_or_else(policy_not_found)?;
        let access = match row.workspace_id {
            None => None,
            Some(w) => {
                self.workspace_access(caller, w)
                    .await
                    .map_err(|e| e.or_not_found(policy_not_found))?
                    .1
            }
        };
        Ok((row, access))
    }

    /// The view of one policy.
    async fn policy_view(&self, row: PolicyRow) -> Result<PolicyView, ApiError> {
        let mut views = self.policy_views(vec![row]).await?;
        views.pop().ok_or_else(policy_not_found)
    }

    /// The views of `rows`, with the people and scopes they name.
    async fn policy_views(&self, rows: Vec<PolicyRow>) -> Result<Vec<PolicyView>, ApiError> {
        const FAILED: &str = "Failed to read policies";
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut people: Vec<Uuid> = rows
            .iter()
            .flat_map(|r| [r.created_by, r.updated_by])
            .collect();
        people.sort_unstable();
        people.dedup();
        let people: HashMap<Uuid, PersonRow> = self
            .store
            .people(people)
            .await
            .map_err(ApiError::from_store(FAILED))?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        let scopes: Vec<Uuid> = rows
            .iter()
            .flat_map(|r| [r.workspace_id, r.repo_id])
            .flatten()
            .collect();
        let names: HashMap<Uuid, String> = self
            .store
            .scope_names(scopes)
            .await
            .map_err(ApiError::from_store(FAILED))?
            .into_iter()
            .collect();
        let person = |id: Uuid| {
            people.get(&id).map_or_else(Person::default, |p| Person {
                id: p.id,
                name: p.name.clone().unwrap_or_default(),
                last_name: p.last_name.clone().unwrap_or_default(),
                email: p.email.clone(),
            })
        };
        let named =
            |id: Option<Uuid>| id.map(|id| (id, names.get(&id).cloned().unwrap_or_default()));
        rows.into_iter()
            .map(|r| {
                Ok(PolicyView {
                    id: r.id,
                    org_id: r.org_id,
                    patterns: r.pattern_list().map_err(|e| ApiError::Internal {
                        public: FAILED,
                        detail: format!("policy {}: patterns unreadable: {e}", r.id),
                    })?,
                    action_type: ActionType::from_number(r.action_type.into())
                        .unwrap_or(ActionType::Log),
                    risk_type: r.risk_type,
                    created_by: person(r.created_by),
                    updated_by: person(r.updated_by),
                    workspace: named(r.workspace_id),
                    repo: named(r.repo_id),
                    name: r.name,
                    content: r.content,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                })
            })
            .collect()
    }
}
