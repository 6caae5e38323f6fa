//! The policy routes (`/policy`, its violations and alerts) and the
//! organization's webhook (`/org/webhook`).

pub mod dto;

use axum::Json;
use axum::extract::{Path, State};

use super::AppState;
use super::conversations::dto::SuccessReply;
use super::error::{ApiErrors, ErrorReply};
use super::extract::{Authenticated, JsonBody, Query};
use crate::error::ApiError;
use crate::service::params::{self, Bound, Page};
use crate::service::policies::{self, CreatePolicy, ListPolicies, ListViolations, UpdatePolicy};
use crate::service::providers::provider_name;
use crate::service::{Credentials, RequestContext};
use dto::{
    AlertDto, AlertsReply, CreatePolicyBody, DeliveriesReply, DeliveryDto, ListPoliciesQuery,
    PageQuery, PoliciesReply, PolicyDto, PolicyReply, UpdatePolicyBody, ViolationDto,
    ViolationsQuery, ViolationsReply, WebhookBody, WebhookReply, WebhookSetReply, comma_list,
    integer, strings,
};

/// The input of a create, read from its body.
fn create_input(body: CreatePolicyBody) -> Result<CreatePolicy, ApiError> {
    let name = provider_name(body.name.text("name")?)?;
    let content = policies::content(body.content.text("content")?)?;
    let risk_type = policies::risk_type(body.risk_type.text("riskType")?.as_deref())?;
    let action_type = policies::action_type(integer("actionType", &body.action_type)?)?;
    let org = body.org_id.text("orgId")?;
    let workspace = body.workspace_id.text("workspaceId")?;
    let repo = body.repo_id.text("repoId")?;
    let patterns = policies::patterns(strings("patterns", body.patterns)?.unwrap_or_default())?;
    Ok(CreatePolicy {
        org_id: params::uuid("orgId", &params::required_text("orgId", org)?)?,
        workspace_id: params::optional_uuid("workspaceId", workspace.as_deref())?,
        repo_id: params::optional_uuid("repoId", repo.as_deref())?,
        name,
        content,
        patterns,
        risk_type,
        action_type,
    })
}

/// Create a policy at organization, workspace or repository scope.
///
/// Organization administrators and owners at any scope; workspace
/// administrators for their workspace and its repositories.
#[utoipa::path(post, path = "/policy", tag = "policy",
    request_body = CreatePolicyBody,
    responses(
        ApiErrors,
        (status = 200, description = "Created", body = PolicyReply),
        (status = 400, description = "Invalid body: missing field, unknown riskType or actionType, invalid pattern, repository outside the workspace", body = ErrorReply),
        (status = 403, description = "May not manage policies of this scope", body = ErrorReply),
        (status = 404, description = "Organization, workspace or repository not found", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn create_policy(
    State(service): State<AppState>,
    credentials: Credentials,
    ctx: RequestContext,
    JsonBody(body): JsonBody<CreatePolicyBody>,
) -> Result<Json<PolicyReply>, ApiError> {
    let (caller, input) = service.admit(&credentials, create_input(body)).await?;
    let policy = service.create_policy(&caller, input, &ctx).await?;
    Ok(Json(PolicyReply {
        success: true,
        policy: policy.into(),
    }))
}

/// The live policies of one scope: the organization's own (only `orgId`),
/// a workspace's, or a repository's, as far as the caller may see them.
#[utoipa::path(get, path = "/policy", tag = "policy",
    params(ListPoliciesQuery),
    responses(
        ApiErrors,
        (status = 200, description = "The policies, oldest first", body = PoliciesReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn list_policies(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<ListPoliciesQuery>,
) -> Result<Json<PoliciesReply>, ApiError> {
    let org = params::required_text("orgId", q.org_id)?;
    let input = ListPolicies {
        org_id: params::uuid("orgId", &org)?,
        workspace_id: params::optional_uuid("workspaceId", q.workspace_id.as_deref())?,
        repo_id: params::optional_uuid("repoId", q.repo_id.as_deref())?,
    };
    let list = service.list_policies(&caller, input).await?;
    Ok(Json(PoliciesReply {
        success: true,
        policies: list.into_iter().map(PolicyDto::from).collect(),
    }))
}

/// One live policy.
#[utoipa::path(get, path = "/policy/{id}", tag = "policy",
    params(("id" = String, Path, format = Uuid, description = "The policy")),
    responses(
        ApiErrors,
        (status = 200, description = "The policy", body = PolicyReply),
        (status = 400, description = "Invalid id", body = ErrorReply),
        (status = 404, description = "Policy not found", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn get_policy(
    Path(id): Path<String>,
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<PolicyReply>, ApiError> {
    let policy = service
        .get_policy(&caller, params::uuid("id", &id)?)
        .await?;
    Ok(Json(PolicyReply {
        success: true,
        policy: policy.into(),
    }))
}

/// The input of an update, read from its body.
fn update_input(id: &str, body: UpdatePolicyBody) -> Result<UpdatePolicy, ApiError> {
    if !(body.org_id.is_null() && body.workspace_id.is_null() && body.repo_id.is_null()) {
        return Err(ApiError::InvalidArgument(
            "The scope of a policy never changes (orgId, workspaceId, repoId)".into(),
        ));
    }
    let name = body.name.text("name")?;
    let content = body.content.text("content")?;
    let risk = body.risk_type.text("riskType")?;
    let action = integer("actionType", &body.action_type)?;
    Ok(UpdatePolicy {
        id: params::uuid("id", id)?,
        name: name.map(|n| provider_name(Some(n))).transpose()?,
        content: content.map(|c| policies::content(Some(c))).transpose()?,
        patterns: strings("patterns", body.patterns)?
            .map(policies::patterns)
            .transpose()?,
        risk_type: risk.map(|r| policies::risk_type(Some(&r))).transpose()?,
        action_type: action.map(|a| policies::action_type(Some(a))).transpose()?,
    })
}

/// Change a policy's name, content, patterns, risk or action; at least one.
#[utoipa::path(put, path = "/policy/{id}", tag = "policy",
    request_body = UpdatePolicyBody,
    params(("id" = String, Path, format = Uuid, description = "The policy")),
    responses(
        ApiErrors,
        (status = 200, description = "Updated", body = PolicyReply),
        (status = 400, description = "Invalid body, a scope change, or nothing to update", body = ErrorReply),
        (status = 403, description = "May not manage policies of this scope", body = ErrorReply),
        (status = 404, description = "Policy not found", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn update_policy(
    Path(id): Path<String>,
    State(service): State<AppState>,
    credentials: Credentials,
    ctx: RequestContext,
    JsonBody(body): JsonBody<UpdatePolicyBody>,
) -> Result<Json<PolicyReply>, ApiError> {
    let (caller, input) = service.admit(&credentials, update_input(&id, body)).await?;
    let policy = service.update_policy(&caller, input, &ctx).await?;
    Ok(Json(PolicyReply {
        success: true,
        policy: policy.into(),
    }))
}

/// Delete a policy (softly: no longer enforced or listed).
#[utoipa::path(delete, path = "/policy/{id}", tag = "policy",
    params(("id" = String, Path, format = Uuid, description = "The policy")),
    responses(
        ApiErrors,
        (status = 200, description = "Deleted", body = SuccessReply),
        (status = 400, description = "Invalid id", body = ErrorReply),
        (status = 403, description = "May not manage policies of this scope", body = ErrorReply),
        (status = 404, description = "Policy not found", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn delete_policy(
    Path(id): Path<String>,
    State(service): State<AppState>,
    ctx: RequestContext,
    Authenticated(caller): Authenticated,
) -> Result<Json<SuccessReply>, ApiError> {
    service
        .delete_policy(&caller, params::uuid("id", &id)?, &ctx)
        .await?;
    Ok(Json(SuccessReply { success: true }))
}

/// The filters of a violations or alerts query (`policy` from the path).
fn violations_input(q: ViolationsQuery, policy: Option<&str>) -> Result<ListViolations, ApiError> {
    let page = Page::new(q.take.map(|t| t.0), q.skip.map(|s| s.0))?;
    let severities = comma_list(q.severity.as_deref())
        .iter()
        .map(|s| policies::severity(s))
        .collect::<Result<_, _>>()?;
    let in_query = params::optional_uuid("policyId", q.policy_id.as_deref())?;
    let policy_id = match policy {
        Some(id) => Some(params::uuid("id", id)?),
        None => in_query,
    };
    Ok(ListViolations {
        workspace_id: params::optional_uuid("workspaceId", q.workspace_id.as_deref())?,
        repo_id: params::optional_uuid("repoId", q.repo_id.as_deref())?,
        policy_id,
        from: params::time_bound("from", q.from.as_deref(), Bound::Start)?,
        to: params::time_bound("to", q.to.as_deref(), Bound::End)?,
        llm_types: comma_list(q.llm_type.as_deref()),
        llm_models: comma_list(q.llm_model.as_deref()),
        hosts: comma_list(q.host.as_deref()),
        severities,
        block: q.block.map(|b| b.0),
        take: page.take,
        skip: page.skip,
    })
}

/// Violations, newest first, filtered; only those the caller may see.
#[utoipa::path(get, path = "/policy/violations", tag = "policy",
    params(ViolationsQuery),
    responses(
        ApiErrors,
        (status = 200, description = "A page of violations", body = ViolationsReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn list_violations(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<ViolationsQuery>,
) -> Result<Json<ViolationsReply>, ApiError> {
    violations(&service, &caller, q, None).await
}

/// One policy's violations, newest first, filtered.
#[utoipa::path(get, path = "/policy/{id}/violations", tag = "policy",
    params(("id" = String, Path, format = Uuid, description = "The policy"), ViolationsQuery),
    responses(
        ApiErrors,
        (status = 200, description = "A page of violations", body = ViolationsReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn list_policy_violations(
    Path(id): Path<String>,
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<ViolationsQuery>,
) -> Result<Json<ViolationsReply>, ApiError> {
    violations(&service, &caller, q, Some(&id)).await
}

async fn violations(
    service: &AppState,
    caller: &crate::domain::Caller,
    q: ViolationsQuery,
    policy: Option<&str>,
) -> Result<Json<ViolationsReply>, ApiError> {
    let input = violations_input(q, policy)?;
    let (take, skip) = (input.take, input.skip);
    let (list, total) = service.list_violations(caller, input, false).await?;
    Ok(Json(ViolationsReply {
        success: true,
        violations: list.into_iter().map(ViolationDto::from).collect(),
        total,
        skip,
        take,
    }))
}

/// Alerts, newest first, filtered; only those the caller may see.
#[utoipa::path(get, path = "/policy/alerts", tag = "policy",
    params(ViolationsQuery),
    responses(
        ApiErrors,
        (status = 200, description = "A page of alerts", body = AlertsReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn list_alerts(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<ViolationsQuery>,
) -> Result<Json<AlertsReply>, ApiError> {
    alerts(&service, &caller, q, None).await
}

/// One policy's alerts, newest first, filtered.
#[utoipa::path(get, path = "/policy/{id}/alerts", tag = "policy",
    params(("id" = String, Path, format = Uuid, description = "The policy"), ViolationsQuery),
    responses(
        ApiErrors,
        (status = 200, description = "A page of alerts", body = AlertsReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn list_policy_alerts(
    Path(id): Path<String>,
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<ViolationsQuery>,
) -> Result<Json<AlertsReply>, ApiError> {
    alerts(&service, &caller, q, Some(&id)).await
}

async fn alerts(
    service: &AppState,
    caller: &crate::domain::Caller,
    q: ViolationsQuery,
    policy: Option<&str>,
) -> Result<Json<AlertsReply>, ApiError> {
    let input = ListViolations {
        severities: Vec::new(),
        block: None,
        ..violations_input(q, policy)?
    };
    let (take, skip) = (input.take, input.skip);
    let (list, total) = service.list_violations(caller, input, true).await?;
    Ok(Json(AlertsReply {
        success: true,
        alerts: list.into_iter().map(AlertDto::from).collect(),
        total,
        skip,
        take,
    }))
}

/// Set the organization's webhook for alerts; the reply carries its new
/// signing secret, shown this once. Organization administrators only.
#[utoipa::path(put, path = "/org/webhook", tag = "policy",
    request_body = WebhookBody,
    responses(
        ApiErrors,
        (status = 200, description = "Set", body = WebhookSetReply),
        (status = 400, description = "Invalid or refused URL", body = ErrorReply),
        (status = 403, description = "Not an organization administrator", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
        (status = 501, description = "No secrets key is configured", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn set_webhook(
    State(service): State<AppState>,
    credentials: Credentials,
    ctx: RequestContext,
    JsonBody(body): JsonBody<WebhookBody>,
) -> Result<Json<WebhookSetReply>, ApiError> {
    let url = body
        .url
        .text("url")
        .and_then(|u| params::required_text("url", u));
    let (caller, url) = service.admit(&credentials, url).await?;
    let (webhook, secret) = service.set_webhook(&caller, &url, &ctx).await?;
    Ok(Json(WebhookSetReply {
        success: true,
        webhook: webhook.into(),
        secret,
    }))
}

/// The organization's webhook (never its secret), or null.
#[utoipa::path(get, path = "/org/webhook", tag = "policy",
    responses(
        ApiErrors,
        (status = 200, description = "The webhook", body = WebhookReply),
        (status = 403, description = "Not an organization administrator", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn get_webhook(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<WebhookReply>, ApiError> {
    let webhook = service.get_webhook(&caller).await?;
    Ok(Json(WebhookReply {
        success: true,
        webhook: webhook.map(Into::into),
    }))
}

/// Remove the organization's webhook.
#[utoipa::path(delete, path = "/org/webhook", tag = "policy",
    responses(
        ApiErrors,
        (status = 200, description = "Removed", body = SuccessReply),
        (status = 403, description = "Not an organization administrator", body = ErrorReply),
        (status = 404, description = "No webhook is set", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn delete_webhook(
    State(service): State<AppState>,
    ctx: RequestContext,
    Authenticated(caller): Authenticated,
) -> Result<Json<SuccessReply>, ApiError> {
    service.delete_webhook(&caller, &ctx).await?;
    Ok(Json(SuccessReply { success: true }))
}

/// The webhook's deliveries, newest first, with their status.
#[utoipa::path(get, path = "/org/webhook/deliveries", tag = "policy",
    params(PageQuery),
    responses(
        ApiErrors,
        (status = 200, description = "A page of deliveries", body = DeliveriesReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
        (status = 403, description = "Not an organization administrator", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn list_deliveries(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<PageQuery>,
) -> Result<Json<DeliveriesReply>, ApiError> {
    let page = Page::new(q.take.map(|t| t.0), q.skip.map(|s| s.0))?;
    let (list, total) = service
        .list_deliveries(&caller, page.take, page.skip)
        .await?;
    Ok(Json(DeliveriesReply {
        success: true,
        deliveries: list.into_iter().map(DeliveryDto::from).collect(),
        total,
        skip: page.skip,
        take: page.take,
    }))
}
