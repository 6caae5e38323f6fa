//! Listing violations and alerts: newest first, filtered as the platform's
//! queries say, visible as the policies are (organization administrators
//! see all; others those in the workspaces they belong to; a workspace or
//! repository they cannot reach gives an empty page).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Caller, RiskType};
use crate::error::ApiError;
use crate::service::Service;
use crate::store::policies::ViolationFilter;

/// `ListViolations`'s input (and `ListAlerts`', without severity and block).
#[derive(Debug, Clone, Default)]
pub struct ListViolations {
    pub workspace_id: Option<Uuid>,
    pub repo_id: Option<Uuid>,
    pub policy_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub llm_types: Vec<String>,
    pub llm_models: Vec<String>,
    pub hosts: Vec<String>,
    pub severities: Vec<RiskType>,
    pub block: Option<bool>,
    pub take: i64,
    pub skip: i64,
}

/// A violation (or its alert) as listed.
#[derive(Debug, Clone)]
pub struct ViolationView {
    pub id: Uuid,
    pub policy_id: Uuid,
    pub policy_name: String,
    pub at: DateTime<Utc>,
    pub explanation: String,
    pub conversation_id: Option<Uuid>,
    pub repo_id: Uuid,
    pub repo_name: String,
    pub user_id: Uuid,
    pub user_name: String,
    /// The provider configuration that served (or would have served) the
    /// turn, and its name; none for the operator's provider.
    pub ai_llm_id: Option<Uuid>,
    pub ai_llm_name: Option<String>,
    pub severity: RiskType,
    pub block: bool,
    pub llm_type: String,
    pub llm_model: String,
    pub host: String,
    /// The alert it raised: its id, message and time.
    pub alert: Option<(Uuid, String, DateTime<Utc>)>,
}

impl Service {
    /// A page of violations (or, with `alerts`, of the alerts they raised)
    /// the caller may see, and how many match.
    pub async fn list_violations(
        &self,
        caller: &Caller,
        input: ListViolations,
        alerts: bool,
    ) -> Result<(Vec<ViolationView>, i64), ApiError> {
        // An inverted range matches nothing (as the conversations' list). A
        // NUL character, which no stored text holds (and PostgreSQL refuses
        // in text), is refused.
        for (name, values) in [
            ("llmType", &input.llm_types),
            ("llmModel", &input.llm_models),
            ("host", &input.hosts),
        ] {
            if values.iter().any(|v| v.contains('\0')) {
                return Err(ApiError::InvalidArgument(format!(
                    "{name} must not contain NUL characters"
                )));
            }
        }
        let filter = ViolationFilter {
            org_id: caller.org_id,
            member: (!caller.role.is_org_admin()).then_some(caller.user_id),
            workspace_id: input.workspace_id,
            repo_id: input.repo_id,
            policy_id: input.policy_id,
            from: input.from,
            to: input.to,
            llm_types: input.llm_types,
            llm_models: input.llm_models,
            hosts: input.hosts,
            severities: input
                .severities
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            block: input.block,
            alerts_only: alerts,
            take: input.take,
            skip: input.skip,
        };
        let (rows, total) = self
            .store
            .list_violations(filter)
            .await
            .map_err(ApiError::from_store("Failed to list policy violations"))?;
        let views = rows
            .into_iter()
            .map(|(v, n)| ViolationView {
                id: v.id,
                policy_id: v.policy_id,
                policy_name: n.policy_name,
                at: v.created_at,
                explanation: v.explanation,
                conversation_id: v.conversation_id,
                repo_id: v.repo_id,
                repo_name: n.repo_name,
                user_id: v.user_id,
                user_name: [n.user_name, n.user_last_name]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" "),
                ai_llm_id: v.ai_llm_id,
                ai_llm_name: n.ai_llm_name,
                severity: v.severity,
                block: v.block,
                llm_type: v.llm_type,
                llm_model: v.llm_model,
                host: v.host,
                alert: n
                    .alert_id
                    .zip(n.alert_message)
                    .zip(n.alert_at)
                    .map(|((id, message), at)| (id, message, at)),
            })
            .collect();
        Ok((views, total))
    }
}
