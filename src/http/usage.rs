//! Usage statistics (`/aistats/daily`, `/aistats/minute`, `/ai/llm/stats`)
//! and token budgets (`/budget`, our extension).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::conversations::dto::{SuccessReply, rfc3339};
use super::error::{ApiErrors, ErrorReply};
use super::extract::{Authenticated, JsonBody, JsonText, Query};
use super::policies::dto::integer;
use crate::error::ApiError;
use crate::service::params;
use crate::service::usage::Grain;
use crate::service::usage::budgets::{BudgetScope, BudgetView, Period};
use crate::service::usage::stats::{StatsQuery, StatsRow};
use crate::store::usage::AiLlmTotals;

/// `GET /aistats/daily` and `/aistats/minute`: the platform's parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct StatsParams {
    /// ISO 8601 date or date-time, inclusive [default: 30 days (daily) or
    /// one hour (minute) before `endDate`].
    #[param(schema_with = crate::http::conversations::dto::time_bound)]
    pub start_date: Option<String>,
    /// ISO 8601 date or date-time, inclusive [default: now]; at most 366
    /// days (daily) or 24 hours (minute) after `startDate`.
    #[param(schema_with = crate::http::conversations::dto::time_bound)]
    pub end_date: Option<String>,
    /// Comma-separated repository ids.
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})*$"
    )]
    pub repo_id: Option<String>,
    /// Comma-separated provider configuration ids (the operator's provider
    /// is the nil UUID).
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})*$"
    )]
    pub ai_llm_id: Option<String>,
    /// Comma-separated repository API key ids (we have none: matches nothing).
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})*$"
    )]
    pub repo_ai_api_key_id: Option<String>,
    /// Comma-separated provider hosts.
    #[param(pattern = r"^[^\x00]+$")]
    pub hosts: Option<String>,
    /// Comma-separated provider types.
    #[param(pattern = r"^[^\x00]+$")]
    pub llm_type: Option<String>,
    /// Comma-separated models.
    #[param(pattern = r"^[^\x00]+$")]
    pub llm_model: Option<String>,
    /// Comma-separated user ids.
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})*$"
    )]
    pub user_uuid: Option<String>,
    /// Comma-separated conversation ids.
    #[param(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(,[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})*$"
    )]
    pub conversation_uuid: Option<String>,
}

impl From<StatsParams> for StatsQuery {
    fn from(p: StatsParams) -> Self {
        StatsQuery {
            start_date: p.start_date,
            end_date: p.end_date,
            repo_id: p.repo_id,
            ai_llm_id: p.ai_llm_id,
            repo_ai_api_key_id: p.repo_ai_api_key_id,
            hosts: p.hosts,
            llm_type: p.llm_type,
            llm_model: p.llm_model,
            user_uuid: p.user_uuid,
            conversation_uuid: p.conversation_uuid,
        }
    }
}

/// The platform's AiStatsData: one time bucket and dimension set.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiStatsDto {
    /// The bucket's start, in seconds since the Unix epoch (UTC).
    pub timestamp: i64,
    #[schema(format = Uuid)]
    pub repo_id: String,
    /// Empty for the operator's provider.
    pub ai_llm_id: String,
    /// Always empty: we have no repository API keys.
    pub repo_ai_api_key_id: String,
    /// The conversation's own tokens (its prompt calls), decimal.
    pub tokens_in: String,
    pub tokens_out: String,
    /// Every token the providers reported: prompt and judge calls, decimal.
    pub llm_tokens_in: String,
    pub llm_tokens_out: String,
    pub active_conversations: i64,
    /// Model calls: prompts and judge calls.
    pub api_calls: i64,
    pub policy_violations: i64,
    pub num_alerts: i64,
    pub num_blocks: i64,
    pub num_severity_low: i64,
    pub num_severity_medium: i64,
    pub num_severity_high: i64,
    /// The calls' mean latency, in milliseconds.
    #[serde(rename = "latency_ms")]
    pub latency_ms: i64,
    pub llm_type: String,
    pub llm_model: String,
    pub host: String,
    #[schema(format = Uuid)]
    pub user_uuid: String,
    #[schema(format = Uuid)]
    pub conversation_uuid: String,
}

impl From<StatsRow> for AiStatsDto {
    fn from(r: StatsRow) -> Self {
        AiStatsDto {
            timestamp: r.bucket.timestamp(),
            repo_id: r.repo_id.to_string(),
            ai_llm_id: r.ai_llm_text(),
            repo_ai_api_key_id: String::new(),
            tokens_in: r.tokens_in.to_string(),
            tokens_out: r.tokens_out.to_string(),
            llm_tokens_in: r.llm_tokens_in.to_string(),
            llm_tokens_out: r.llm_tokens_out.to_string(),
            active_conversations: 1,
            api_calls: r.api_calls,
            policy_violations: r.violations,
            num_alerts: r.alerts,
            num_blocks: r.blocks,
            num_severity_low: r.severity_low,
            num_severity_medium: r.severity_medium,
            num_severity_high: r.severity_high,
            latency_ms: r.mean_latency_ms(),
            llm_type: r.llm_type,
            llm_model: r.llm_model,
            host: r.host,
            user_uuid: r.user_id.to_string(),
            conversation_uuid: r.conversation_id.to_string(),
        }
    }
}

/// `GET /aistats/daily|minute`.
#[derive(Serialize, ToSchema)]
pub struct AiStatsReply {
    pub success: bool,
    /// Oldest bucket first.
    pub data: Vec<AiStatsDto>,
}

async fn stats(
    service: &AppState,
    caller: &crate::domain::Caller,
    grain: Grain,
    q: StatsParams,
) -> Result<Json<AiStatsReply>, ApiError> {
    let rows = service.usage_stats(caller, grain, q.into()).await?;
    Ok(Json(AiStatsReply {
        success: true,
        data: rows.into_iter().map(AiStatsDto::from).collect(),
    }))
}

/// Usage per UTC day and dimension set (repository, configuration, type,
/// model, host, user, conversation). Organization administrators see the
/// whole organization; others their own usage and that of the workspaces
/// they administer.
#[utoipa::path(get, path = "/aistats/daily", tag = "usage",
    params(StatsParams),
    responses(
        ApiErrors,
        (status = 200, description = "Rows per day and dimension set", body = AiStatsReply),
        (status = 400, description = "Invalid parameter (named)", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn ai_stats_daily(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<StatsParams>,
) -> Result<Json<AiStatsReply>, ApiError> {
    stats(&service, &caller, Grain::Day, q).await
}

/// Usage per minute and dimension set; as `/aistats/daily`, over at most
/// 24 hours.
#[utoipa::path(get, path = "/aistats/minute", tag = "usage",
    params(StatsParams),
    responses(
        ApiErrors,
        (status = 200, description = "Rows per minute and dimension set", body = AiStatsReply),
        (status = 400, description = "Invalid parameter (named)", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn ai_stats_minute(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<StatsParams>,
) -> Result<Json<AiStatsReply>, ApiError> {
    stats(&service, &caller, Grain::Minute, q).await
}

/// `GET /ai/llm/stats`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct AiLlmStatsParams {
    /// One configuration [default: every one the caller can see].
    #[param(format = Uuid)]
    pub ai_llm_id: Option<String>,
}

/// A configuration's totals, all as decimal strings.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiLlmStatsDto {
    #[schema(format = Uuid)]
    pub ai_llm_id: String,
    pub total_api_calls: String,
    pub total_tokens_in: String,
    pub total_tokens_out: String,
    pub total_llm_tokens_in: String,
    pub total_llm_tokens_out: String,
    pub total_policy_violations: String,
    pub total_alerts: String,
    pub total_blocks: String,
}

impl From<AiLlmTotals> for AiLlmStatsDto {
    fn from(t: AiLlmTotals) -> Self {
        AiLlmStatsDto {
            ai_llm_id: t.ai_llm_id.to_string(),
            total_api_calls: t.api_calls.to_string(),
            total_tokens_in: t.tokens_in.to_string(),
            total_tokens_out: t.tokens_out.to_string(),
            total_llm_tokens_in: t.llm_tokens_in.to_string(),
            total_llm_tokens_out: t.llm_tokens_out.to_string(),
            total_policy_violations: t.violations.to_string(),
            total_alerts: t.alerts.to_string(),
            total_blocks: t.blocks.to_string(),
        }
    }
}

/// `GET /ai/llm/stats`.
#[derive(Serialize, ToSchema)]
pub struct AiLlmStatsReply {
    pub success: bool,
    pub stats: Vec<AiLlmStatsDto>,
}

/// Each provider configuration's usage, all time.
#[utoipa::path(get, path = "/ai/llm/stats", tag = "ai",
    params(AiLlmStatsParams),
    responses(
        ApiErrors,
        (status = 200, description = "Totals per configuration", body = AiLlmStatsReply),
        (status = 400, description = "Invalid aiLlmId", body = ErrorReply),
        (status = 404, description = "AI configuration not found", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn ai_llm_stats(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<AiLlmStatsParams>,
) -> Result<Json<AiLlmStatsReply>, ApiError> {
    let id = params::optional_uuid("aiLlmId", q.ai_llm_id.as_deref())?;
    let totals = service.ai_llm_stats(&caller, id).await?;
    Ok(Json(AiLlmStatsReply {
        success: true,
        stats: totals.into_iter().map(AiLlmStatsDto::from).collect(),
    }))
}

/// `PUT /budget`: a budget of the caller's organization, or of one of its
/// workspaces.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetBudgetBody {
    /// A workspace's budget [default: the organization's].
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub workspace_id: JsonText,
    #[serde(default)]
    #[schema(value_type = PeriodName, required = true)]
    pub period: JsonText,
    /// The limit: tokens in and out, prompts' and judges', per period.
    #[serde(default)]
    #[schema(value_type = i64, minimum = 1, maximum = 1_000_000_000_000_000_i64, required = true)]
    pub tokens: Value,
}

/// A budget's period: UTC days or calendar months.
#[derive(ToSchema)]
#[schema(as = PeriodName)]
#[allow(dead_code)]
pub enum PeriodName {
    #[schema(rename = "day")]
    Day,
    #[schema(rename = "month")]
    Month,
}

/// A budget with its current period's spend.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetDto {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub org_id: String,
    /// Null for the organization's own budget.
    #[schema(format = Uuid)]
    pub workspace_id: Option<String>,
    #[schema(value_type = PeriodName)]
    pub period: String,
    /// The limit, decimal.
    pub tokens: String,
    /// Spent in the current period, decimal.
    pub used: String,
    /// Held by prompts in flight, decimal.
    pub reserved: String,
    /// What is left (never below zero), decimal.
    pub remaining: String,
    pub period_start: String,
    pub period_end: String,
    pub updated_at: String,
}

impl From<BudgetView> for BudgetDto {
    fn from(b: BudgetView) -> Self {
        BudgetDto {
            id: b.id.to_string(),
            org_id: b.org_id.to_string(),
            workspace_id: b.workspace_id.map(|w| w.to_string()),
            period: b.period.as_str().into(),
            tokens: b.tokens.to_string(),
            used: b.used.to_string(),
            reserved: b.reserved.to_string(),
            remaining: (b.tokens - b.used - b.reserved).max(0).to_string(),
            period_start: rfc3339(b.period_start),
            period_end: rfc3339(b.period_end),
            updated_at: rfc3339(b.updated_at),
        }
    }
}

/// `PUT /budget`.
#[derive(Serialize, ToSchema)]
pub struct BudgetReply {
    pub success: bool,
    pub budget: BudgetDto,
}

/// `GET /budget`.
#[derive(Serialize, ToSchema)]
pub struct BudgetsReply {
    pub success: bool,
    pub budgets: Vec<BudgetDto>,
}

/// `GET /budget`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct ListBudgetsParams {
    /// Only this workspace's budgets [default: all of the organization's].
    #[param(format = Uuid)]
    pub workspace_id: Option<String>,
}

/// `DELETE /budget`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct ClearBudgetParams {
    /// A workspace's budget [default: the organization's own].
    #[param(format = Uuid)]
    pub workspace_id: Option<String>,
    /// Which of its budgets.
    #[param(value_type = PeriodName, required = true)]
    pub period: Option<String>,
}

fn scope_of(workspace_id: Option<&str>) -> Result<BudgetScope, ApiError> {
    Ok(match params::optional_uuid("workspaceId", workspace_id)? {
        Some(id) => BudgetScope::Workspace(id),
        None => BudgetScope::Org,
    })
}

/// Set a token budget (organization administrators): the organization's,
/// or a workspace's, per UTC day or month. Prompts that would pass it are
/// refused with 429 until the period ends.
#[utoipa::path(put, path = "/budget", tag = "usage",
    request_body = SetBudgetBody,
    responses(
        ApiErrors,
        (status = 200, description = "Set", body = BudgetReply),
        (status = 400, description = "Invalid body: period, tokens (1 to 10^15), workspaceId", body = ErrorReply),
        (status = 403, description = "Not an organization administrator", body = ErrorReply),
        (status = 404, description = "Workspace not found", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn set_budget(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<SetBudgetBody>,
) -> Result<Json<BudgetReply>, ApiError> {
    let scope = scope_of(body.workspace_id.text("workspaceId")?.as_deref())?;
    let period = Period::parse(&params::required_text(
        "period",
        body.period.text("period")?,
    )?)?;
    let tokens = integer("tokens", &body.tokens)?
        .ok_or_else(|| ApiError::InvalidArgument("tokens is required".into()))?;
    let budget = service.set_budget(&caller, scope, period, tokens).await?;
    Ok(Json(BudgetReply {
        success: true,
        budget: budget.into(),
    }))
}

/// The organization's budgets (or a workspace's), with what their current
/// periods spent (organization administrators).
#[utoipa::path(get, path = "/budget", tag = "usage",
    params(ListBudgetsParams),
    responses(
        ApiErrors,
        (status = 200, description = "The budgets", body = BudgetsReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
        (status = 403, description = "Not an organization administrator", body = ErrorReply),
        (status = 404, description = "Workspace not found", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn list_budgets(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<ListBudgetsParams>,
) -> Result<Json<BudgetsReply>, ApiError> {
    let scope = q
        .workspace_id
        .as_deref()
        .map(|w| scope_of(Some(w)))
        .transpose()?;
    let budgets = service.list_budgets(&caller, scope).await?;
    Ok(Json(BudgetsReply {
        success: true,
        budgets: budgets.into_iter().map(BudgetDto::from).collect(),
    }))
}

/// Clear a budget (organization administrators).
#[utoipa::path(delete, path = "/budget", tag = "usage",
    params(ClearBudgetParams),
    responses(
        ApiErrors,
        (status = 200, description = "Cleared", body = SuccessReply),
        (status = 400, description = "Invalid parameter, or no period", body = ErrorReply),
        (status = 403, description = "Not an organization administrator", body = ErrorReply),
        (status = 404, description = "Workspace or budget not found", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn clear_budget(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<ClearBudgetParams>,
) -> Result<Json<SuccessReply>, ApiError> {
    let scope = scope_of(q.workspace_id.as_deref())?;
    let period = Period::parse(&params::required_text("period", q.period)?)?;
    service.clear_budget(&caller, scope, period).await?;
    Ok(Json(SuccessReply { success: true }))
}
