//! `flashback.ai.v1.UsageService` and `SystemEventService` over the core:
//! the same operations as `/aistats/*`, `/ai/llm/stats`, `/budget` and
//! `/systemevent`, with the same parsers and rules.

use tonic::{Request, Response, Status};

use super::GrpcApi;
use super::call::{given, timestamp};
use crate::error::ApiError;
use crate::pb::ai::system_event_service_server::SystemEventService;
use crate::pb::ai::usage_service_server::UsageService;
use crate::pb::ai::{
    self, ClearBudgetRequest, ClearBudgetResponse, GetAiLlmStatsRequest, GetAiLlmStatsResponse,
    GetDailyStatsRequest, GetDailyStatsResponse, GetMinuteStatsRequest, GetMinuteStatsResponse,
    ListBudgetsRequest, ListBudgetsResponse, ListSystemEventsRequest, ListSystemEventsResponse,
    MarkSystemEventsReadRequest, MarkSystemEventsReadResponse, MarkSystemEventsUnreadRequest,
    MarkSystemEventsUnreadResponse, SetBudgetRequest, SetBudgetResponse,
};
use crate::service::events::{FeedEvent, FeedQuery, mark_ids_count};
use crate::service::params;
use crate::service::usage::Grain;
use crate::service::usage::budgets::{BudgetScope, BudgetView, Period};
use crate::service::usage::stats::{StatsQuery, StatsRow};

fn stats_query(q: Option<&ai::StatsQuery>) -> StatsQuery {
    let q = q.cloned().unwrap_or_default();
    let text = |s: String| (!s.is_empty()).then_some(s);
    StatsQuery {
        start_date: text(q.start_date),
        end_date: text(q.end_date),
        repo_id: text(q.repo_id),
        ai_llm_id: text(q.ai_llm_id),
        repo_ai_api_key_id: text(q.repo_ai_api_key_id),
        hosts: text(q.hosts),
        llm_type: text(q.llm_type),
        llm_model: text(q.llm_model),
        user_uuid: text(q.user_uuid),
        conversation_uuid: text(q.conversation_uuid),
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

fn stats_pb(r: StatsRow) -> ai::StatsRow {
    ai::StatsRow {
        timestamp: Some(timestamp(r.bucket)),
        repo_id: r.repo_id.to_string(),
        ai_llm_id: r.ai_llm_text(),
        repo_ai_api_key_id: String::new(),
        tokens_in: count(r.tokens_in),
        tokens_out: count(r.tokens_out),
        llm_tokens_in: count(r.llm_tokens_in),
        llm_tokens_out: count(r.llm_tokens_out),
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

fn budget_pb(b: BudgetView) -> ai::Budget {
    ai::Budget {
        id: b.id.to_string(),
        org_id: b.org_id.to_string(),
        workspace_id: b.workspace_id.map(|w| w.to_string()).unwrap_or_default(),
        period: b.period.as_str().into(),
        tokens: b.tokens,
        used: b.used,
        reserved: b.reserved,
        remaining: (b.tokens - b.used - b.reserved).max(0),
        period_start: Some(timestamp(b.period_start)),
        period_end: Some(timestamp(b.period_end)),
        updated_at: Some(timestamp(b.updated_at)),
    }
}

fn scope_of(workspace_id: &str) -> Result<BudgetScope, ApiError> {
    Ok(
        match params::optional_uuid("workspaceId", given(workspace_id))? {
            Some(id) => BudgetScope::Workspace(id),
            None => BudgetScope::Org,
        },
    )
}

fn event_pb(e: FeedEvent) -> ai::SystemEvent {
    let text = |id: Option<uuid::Uuid>| id.map(|i| i.to_string()).unwrap_or_default();
    ai::SystemEvent {
        id: e.id.to_string(),
        timestamp: Some(timestamp(e.at)),
        context_id: text(e.context_id),
        context: e.context,
        event: e.event,
        org_id: e.org_id.to_string(),
        user_id: text(e.user_id),
        user_name: e.user_name,
        user_email: e.user_email,
        workspace_id: text(e.workspace_id),
        json_data: e.json_data.unwrap_or_default(),
        show_unread: e.unread,
    }
}

impl GrpcApi {
    /// Marks events read (or unread) for the caller.
    async fn mark(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        ids: &[String],
        read: bool,
    ) -> Result<Response<()>, Status> {
        let input = mark_ids_count(ids.len()).map(|()| ids.to_vec());
        self.call(metadata, input, async |service, caller, ids, _| {
            service.mark_system_events(&caller, ids, read).await
        })
        .await
    }

    /// The rows of a daily or minute statistics rpc.
    async fn stats(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        grain: Grain,
        query: StatsQuery,
    ) -> Result<Response<Vec<ai::StatsRow>>, Status> {
        self.call(metadata, Ok(query), async |service, caller, q, _| {
            let rows = service.usage_stats(&caller, grain, q).await?;
            Ok(rows.into_iter().map(stats_pb).collect())
        })
        .await
    }
}

#[tonic::async_trait]
impl UsageService for GrpcApi {
    async fn get_daily_stats(
        &self,
        request: Request<GetDailyStatsRequest>,
    ) -> Result<Response<GetDailyStatsResponse>, Status> {
        let query = stats_query(request.get_ref().query.as_ref());
        let data = self.stats(request.metadata(), Grain::Day, query).await?;
        Ok(data.map(|data| GetDailyStatsResponse { data }))
    }

    async fn get_minute_stats(
        &self,
        request: Request<GetMinuteStatsRequest>,
    ) -> Result<Response<GetMinuteStatsResponse>, Status> {
        let query = stats_query(request.get_ref().query.as_ref());
        let data = self.stats(request.metadata(), Grain::Minute, query).await?;
        Ok(data.map(|data| GetMinuteStatsResponse { data }))
    }

    async fn get_ai_llm_stats(
        &self,
        request: Request<GetAiLlmStatsRequest>,
    ) -> Result<Response<GetAiLlmStatsResponse>, Status> {
        let input = params::optional_uuid("aiLlmId", given(&request.get_ref().ai_llm_id));
        self.call(request.metadata(), input, async |service, caller, id, _| {
            let totals = service.ai_llm_stats(&caller, id).await?;
            Ok(GetAiLlmStatsResponse {
                stats: totals
                    .into_iter()
                    .map(|t| ai::AiLlmStats {
                        ai_llm_id: t.ai_llm_id.to_string(),
                        total_api_calls: count(t.api_calls),
                        total_tokens_in: count(t.tokens_in),
                        total_tokens_out: count(t.tokens_out),
                        total_llm_tokens_in: count(t.llm_tokens_in),
                        total_llm_tokens_out: count(t.llm_tokens_out),
                        total_policy_violations: count(t.violations),
                        total_alerts: count(t.alerts),
                        total_blocks: count(t.blocks),
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn set_budget(
        &self,
        request: Request<SetBudgetRequest>,
    ) -> Result<Response<SetBudgetResponse>, Status> {
        let r = request.get_ref();
        let input = (|| {
            Ok((
                scope_of(&r.workspace_id)?,
                Period::parse(&params::required_text("period", Some(r.period.clone()))?)?,
                r.tokens,
            ))
        })();
        self.call(
            request.metadata(),
            input,
            async |service, caller, (scope, period, tokens), _| {
                let budget = service.set_budget(&caller, scope, period, tokens).await?;
                Ok(SetBudgetResponse {
                    budget: Some(budget_pb(budget)),
                })
            },
        )
        .await
    }

    async fn list_budgets(
        &self,
        request: Request<ListBudgetsRequest>,
    ) -> Result<Response<ListBudgetsResponse>, Status> {
        let r = request.get_ref();
        let input = given(&r.workspace_id).map(scope_of).transpose();
        self.call(
            request.metadata(),
            input,
            async |service, caller, scope, _| {
                let budgets = service.list_budgets(&caller, scope).await?;
                Ok(ListBudgetsResponse {
                    budgets: budgets.into_iter().map(budget_pb).collect(),
                })
            },
        )
        .await
    }

    async fn clear_budget(
        &self,
        request: Request<ClearBudgetRequest>,
    ) -> Result<Response<ClearBudgetResponse>, Status> {
        let r = request.get_ref();
        let input = (|| {
            Ok((
                scope_of(&r.workspace_id)?,
                Period::parse(&params::required_text("period", Some(r.period.clone()))?)?,
            ))
        })();
        self.call(
            request.metadata(),
            input,
            async |service, caller, (scope, period), _| {
                service.clear_budget(&caller, scope, period).await?;
                Ok(ClearBudgetResponse {})
            },
        )
        .await
    }
}

#[tonic::async_trait]
impl SystemEventService for GrpcApi {
    async fn list_system_events(
        &self,
        request: Request<ListSystemEventsRequest>,
    ) -> Result<Response<ListSystemEventsResponse>, Status> {
        let r = request.get_ref();
        let text = |s: &str| given(s).map(str::to_owned);
        let input = Ok(FeedQuery {
            from_timestamp: text(&r.from_timestamp),
            to_timestamp: text(&r.to_timestamp),
            context_id: text(&r.context_id),
            context: r.context,
            event: r.event,
            user_id: text(&r.user_id),
            workspace_id: text(&r.workspace_id),
            show_unread: Some(r.show_unread),
            take: (r.take != 0).then_some(r.take),
            skip: (r.skip != 0).then_some(r.skip),
        });
        self.call(request.metadata(), input, async |service, caller, q, _| {
            let page = service.list_system_events(&caller, q).await?;
            Ok(ListSystemEventsResponse {
                events: page.events.into_iter().map(event_pb).collect(),
                total: page.total,
                skip: page.skip,
                take: page.take,
            })
        })
        .await
    }

    async fn mark_system_events_read(
        &self,
        request: Request<MarkSystemEventsReadRequest>,
    ) -> Result<Response<MarkSystemEventsReadResponse>, Status> {
        let marked = self.mark(request.metadata(), &request.get_ref().ids, true);
        Ok(marked.await?.map(|()| MarkSystemEventsReadResponse {}))
    }

    async fn mark_system_events_unread(
        &self,
        request: Request<MarkSystemEventsUnreadRequest>,
    ) -> Result<Response<MarkSystemEventsUnreadResponse>, Status> {
        let marked = self.mark(request.metadata(), &request.get_ref().ids, false);
        Ok(marked.await?.map(|()| MarkSystemEventsUnreadResponse {}))
    }
}
