//! `flashback.ai.v1.PolicyService` over the core: the same operations as the
//! `/policy` and `/org/webhook` routes, with the same parsers and rules.

use tonic::{Request, Response, Status};

use super::GrpcApi;
use super::call::{given, timestamp};
use crate::error::ApiError;
use crate::pb::ai::policy_service_server::PolicyService;
use crate::pb::ai::{
    self, CreatePolicyRequest, CreatePolicyResponse, DeletePolicyRequest, DeletePolicyResponse,
    DeleteWebhookRequest, DeleteWebhookResponse, GetPolicyRequest, GetPolicyResponse,
    GetWebhookRequest, GetWebhookResponse, ListAlertsRequest, ListAlertsResponse,
    ListDeliveriesRequest, ListDeliveriesResponse, ListPoliciesRequest, ListPoliciesResponse,
    ListViolationsRequest, ListViolationsResponse, SetWebhookRequest, SetWebhookResponse,
    UpdatePolicyRequest, UpdatePolicyResponse,
};
use crate::service::params::{self, Bound, Page};
use crate::service::policies::{
    self, CreatePolicy, DeliveryView, ListPolicies, ListViolations, Person, PolicyView,
    UpdatePolicy, ViolationView, WebhookView,
};
use crate::service::providers::provider_name;

fn person_pb(p: Person) -> ai::Person {
    ai::Person {
        id: p.id.to_string(),
        name: p.name,
        last_name: p.last_name,
        email: p.email,
    }
}

fn policy_pb(p: PolicyView) -> ai::Policy {
    let (workspace_id, workspace_name) = p
        .workspace
        .map_or_else(Default::default, |(id, n)| (id.to_string(), n));
    let (repo_id, repo_name) = p
        .repo
        .map_or_else(Default::default, |(id, n)| (id.to_string(), n));
    ai::Policy {
        id: p.id.to_string(),
        org_id: p.org_id.to_string(),
        name: p.name,
        content: p.content,
        risk_type: p.risk_type.as_str().to_owned(),
        action_type: p.action_type.number(),
        patterns: p.patterns,
        created_by: Some(person_pb(p.created_by)),
        created_at: Some(timestamp(p.created_at)),
        last_updated_by: Some(person_pb(p.updated_by)),
        last_updated_at: Some(timestamp(p.updated_at)),
        workspace_id,
        workspace_name,
        repo_id,
        repo_name,
    }
}

fn create_input(r: &CreatePolicyRequest) -> Result<CreatePolicy, ApiError> {
    Ok(CreatePolicy {
        name: provider_name(given(&r.name).map(str::to_owned))?,
        content: policies::content(Some(r.content.clone()))?,
        risk_type: policies::risk_type(given(&r.risk_type))?,
        action_type: policies::action_type(Some(r.action_type.into()))?,
        patterns: policies::patterns(r.patterns.clone())?,
        org_id: params::uuid("orgId", &r.org_id)?,
        workspace_id: params::optional_uuid("workspaceId", given(&r.workspace_id))?,
        repo_id: params::optional_uuid("repoId", given(&r.repo_id))?,
    })
}

fn update_input(r: &UpdatePolicyRequest) -> Result<UpdatePolicy, ApiError> {
    Ok(UpdatePolicy {
        id: params::uuid("id", &r.id)?,
        name: r.name.clone().map(|n| provider_name(Some(n))).transpose()?,
        content: r
            .content
            .clone()
            .map(|c| policies::content(Some(c)))
            .transpose()?,
        patterns: r
            .replace_patterns
            .then(|| policies::patterns(r.patterns.clone()))
            .transpose()?,
        risk_type: r
            .risk_type
            .as_deref()
            .map(|t| policies::risk_type(Some(t)))
            .transpose()?,
        action_type: r
            .action_type
            .map(|a| policies::action_type(Some(a.into())))
            .transpose()?,
    })
}

/// The filters of a violations or alerts request.
fn filter_input(f: Option<&ai::ViolationFilter>) -> Result<ListViolations, ApiError> {
    let f = f.cloned().unwrap_or_default();
    let page = Page::new(
        (f.take != 0).then_some(f.take),
        (f.skip != 0).then_some(f.skip),
    )?;
    Ok(ListViolations {
        workspace_id: params::optional_uuid("workspaceId", given(&f.workspace_id))?,
        repo_id: params::optional_uuid("repoId", given(&f.repo_id))?,
        policy_id: params::optional_uuid("policyId", given(&f.policy_id))?,
        from: params::time_bound("from", given(&f.from), Bound::Start)?,
        to: params::time_bound("to", given(&f.to), Bound::End)?,
        llm_types: f.llm_types,
        llm_models: f.llm_models,
        hosts: f.hosts,
        severities: Vec::new(),
        block: None,
        take: page.take,
        skip: page.skip,
    })
}

fn violation_pb(v: ViolationView) -> ai::Violation {
    ai::Violation {
        id: v.id.to_string(),
        policy_id: v.policy_id.to_string(),
        policy_name: v.policy_name,
        timestamp: Some(timestamp(v.at)),
        explanation: v.explanation,
        conversation_id: v.conversation_id.map(|c| c.to_string()).unwrap_or_default(),
        repo_id: v.repo_id.to_string(),
        repo_name: v.repo_name,
        user_id: v.user_id.to_string(),
        user_name: v.user_name,
        ai_llm_id: v.ai_llm_id.map(|i| i.to_string()).unwrap_or_default(),
        ai_llm_name: v.ai_llm_name.unwrap_or_default(),
        severity: v.severity.as_str().to_owned(),
        block: v.block,
        llm_type: v.llm_type,
        llm_model: v.llm_model,
        host: v.host,
    }
}

fn alert_pb(v: ViolationView) -> ai::Alert {
    let (id, message, at) = v.alert.unwrap_or((v.id, String::new(), v.at));
    ai::Alert {
        id: id.to_string(),
        violation_id: v.id.to_string(),
        policy_id: v.policy_id.to_string(),
        policy_name: v.policy_name,
        timestamp: Some(timestamp(at)),
        message,
        conversation_id: v.conversation_id.map(|c| c.to_string()).unwrap_or_default(),
        repo_id: v.repo_id.to_string(),
        repo_name: v.repo_name,
        user_id: v.user_id.to_string(),
        user_name: v.user_name,
        ai_llm_id: v.ai_llm_id.map(|i| i.to_string()).unwrap_or_default(),
        ai_llm_name: v.ai_llm_name.unwrap_or_default(),
        llm_type: v.llm_type,
        llm_model: v.llm_model,
        host: v.host,
    }
}

fn webhook_pb(w: WebhookView) -> ai::Webhook {
    ai::Webhook {
        url: w.url,
        created_at: Some(timestamp(w.created_at)),
        updated_at: Some(timestamp(w.updated_at)),
    }
}

fn delivery_pb(d: DeliveryView) -> ai::Delivery {
    ai::Delivery {
        id: d.id.to_string(),
        alert_id: d.alert_id.to_string(),
        status: d.status,
        attempts: d.attempts,
        last_status: d.last_status,
        last_error: d.last_error.unwrap_or_default(),
        next_attempt_at: d.next_attempt_at.map(timestamp),
        created_at: Some(timestamp(d.created_at)),
        delivered_at: d.delivered_at.map(timestamp),
    }
}

#[tonic::async_trait]
impl PolicyService for GrpcApi {
    async fn create_policy(
        &self,
        request: Request<CreatePolicyRequest>,
    ) -> Result<Response<CreatePolicyResponse>, Status> {
        let input = create_input(request.get_ref());
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, ctx| {
                let policy = service.create_policy(&caller, input, &ctx).await?;
                Ok(CreatePolicyResponse {
                    policy: Some(policy_pb(policy)),
                })
            },
        )
        .await
    }

    async fn list_policies(
        &self,
        request: Request<ListPoliciesRequest>,
    ) -> Result<Response<ListPoliciesResponse>, Status> {
        let r = request.get_ref();
        let input = (|| {
            Ok(ListPolicies {
                org_id: params::uuid("orgId", &r.org_id)?,
                workspace_id: params::optional_uuid("workspaceId", given(&r.workspace_id))?,
                repo_id: params::optional_uuid("repoId", given(&r.repo_id))?,
            })
        })();
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, _| {
                let list = service.list_policies(&caller, input).await?;
                Ok(ListPoliciesResponse {
                    policies: list.into_iter().map(policy_pb).collect(),
                })
            },
        )
        .await
    }

    async fn get_policy(
        &self,
        request: Request<GetPolicyRequest>,
    ) -> Result<Response<GetPolicyResponse>, Status> {
        let input = params::uuid("id", &request.get_ref().id);
        self.call(request.metadata(), input, async |service, caller, id, _| {
            let policy = service.get_policy(&caller, id).await?;
            Ok(GetPolicyResponse {
                policy: Some(policy_pb(policy)),
            })
        })
        .await
    }

    async fn update_policy(
        &self,
        request: Request<UpdatePolicyRequest>,
    ) -> Result<Response<UpdatePolicyResponse>, Status> {
        let input = update_input(request.get_ref());
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, ctx| {
                let policy = service.update_policy(&caller, input, &ctx).await?;
                Ok(UpdatePolicyResponse {
                    policy: Some(policy_pb(policy)),
                })
            },
        )
        .await
    }

    async fn delete_policy(
        &self,
        request: Request<DeletePolicyRequest>,
    ) -> Result<Response<DeletePolicyResponse>, Status> {
        let input = params::uuid("id", &request.get_ref().id);
        self.call(
            request.metadata(),
            input,
            async |service, caller, id, ctx| {
                service.delete_policy(&caller, id, &ctx).await?;
                Ok(DeletePolicyResponse {})
            },
        )
        .await
    }

    async fn list_violations(
        &self,
        request: Request<ListViolationsRequest>,
    ) -> Result<Response<ListViolationsResponse>, Status> {
        let r = request.get_ref();
        let input = (|| {
            Ok(ListViolations {
                severities: r
                    .severities
                    .iter()
                    .map(|s| policies::severity(s))
                    .collect::<Result<_, _>>()?,
                block: r.block,
                ..filter_input(r.filter.as_ref())?
            })
        })();
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, _| {
                let (take, skip) = (input.take, input.skip);
                let (list, total) = service.list_violations(&caller, input, false).await?;
                Ok(ListViolationsResponse {
                    violations: list.into_iter().map(violation_pb).collect(),
                    total,
                    skip,
                    take,
                })
            },
        )
        .await
    }

    async fn list_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        let input = filter_input(request.get_ref().filter.as_ref());
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, _| {
                let (take, skip) = (input.take, input.skip);
                let (list, total) = service.list_violations(&caller, input, true).await?;
                Ok(ListAlertsResponse {
                    alerts: list.into_iter().map(alert_pb).collect(),
                    total,
                    skip,
                    take,
                })
            },
        )
        .await
    }

    async fn set_webhook(
        &self,
        request: Request<SetWebhookRequest>,
    ) -> Result<Response<SetWebhookResponse>, Status> {
        let url = params::required_text("url", given(&request.get_ref().url).map(str::to_owned));
        self.call(
            request.metadata(),
            url,
            async |service, caller, url, ctx| {
                let (webhook, secret) = service.set_webhook(&caller, &url, &ctx).await?;
                Ok(SetWebhookResponse {
                    webhook: Some(webhook_pb(webhook)),
                    secret,
                })
            },
        )
        .await
    }

    async fn get_webhook(
        &self,
        request: Request<GetWebhookRequest>,
    ) -> Result<Response<GetWebhookResponse>, Status> {
        self.call(
            request.metadata(),
            Ok(()),
            async |service, caller, (), _| {
                let webhook = service.get_webhook(&caller).await?;
                Ok(GetWebhookResponse {
                    webhook: webhook.map(webhook_pb),
                })
            },
        )
        .await
    }

    async fn delete_webhook(
        &self,
        request: Request<DeleteWebhookRequest>,
    ) -> Result<Response<DeleteWebhookResponse>, Status> {
        self.call(
            request.metadata(),
            Ok(()),
            async |service, caller, (), ctx| {
                service.delete_webhook(&caller, &ctx).await?;
                Ok(DeleteWebhookResponse {})
            },
        )
        .await
    }

    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let r = request.get_ref();
        let page = Page::new(
            (r.take != 0).then_some(r.take),
            (r.skip != 0).then_some(r.skip),
        );
        self.call(
            request.metadata(),
            page,
            async |service, caller, page, _| {
                let (list, total) = service
                    .list_deliveries(&caller, page.take, page.skip)
                    .await?;
                Ok(ListDeliveriesResponse {
                    deliveries: list.into_iter().map(delivery_pb).collect(),
                    total,
                    skip: page.skip,
                    take: page.take,
                })
            },
        )
        .await
    }
}
