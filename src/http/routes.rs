//! The one list of routes: the router is built from it, and so is the
//! OpenAPI document (utoipa-axum collects each handler's `#[utoipa::path]`).

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    AppState, conversations, events, messages, openapi, operations, policies, providers, usage,
};

/// The API routes (limited by admission).
pub fn api() -> OpenApiRouter<AppState> {
    quick().merge(provider_calls())
}

/// The API routes that call a model provider, limited by the provider's time
/// rather than the request timeout (gRPC: `protocol::PROVIDER_RPCS`).
pub fn provider_calls() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(messages::prompt_conversation))
        .routes(routes!(providers::validate_ai_llm))
        .routes(routes!(providers::ai_models))
}

/// The other API routes.
pub fn quick() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            conversations::create_conversation,
            conversations::list_conversations
        ))
        .routes(routes!(
            conversations::get_conversation,
            conversations::delete_conversation
        ))
        .routes(routes!(messages::list_messages))
        .routes(routes!(messages::resume_prompt))
        .routes(routes!(providers::create_ai_llm, providers::list_ai_llms))
        .routes(routes!(providers::update_ai_llm, providers::delete_ai_llm))
        .routes(routes!(providers::attach_repo))
        .routes(routes!(providers::detach_repo))
        .routes(routes!(providers::available_ai_llms))
        .routes(routes!(policies::create_policy, policies::list_policies))
        .routes(routes!(policies::list_violations))
        .routes(routes!(policies::list_alerts))
        .routes(routes!(
            policies::get_policy,
            policies::update_policy,
            policies::delete_policy
        ))
        .routes(routes!(policies::list_policy_violations))
        .routes(routes!(policies::list_policy_alerts))
        .routes(routes!(
            policies::set_webhook,
            policies::get_webhook,
            policies::delete_webhook
        ))
        .routes(routes!(policies::list_deliveries))
        .routes(routes!(usage::ai_stats_daily))
        .routes(routes!(usage::ai_stats_minute))
        .routes(routes!(usage::ai_llm_stats))
        .routes(routes!(
            usage::set_budget,
            usage::list_budgets,
            usage::clear_budget
        ))
        .routes(routes!(events::list_system_events))
        .routes(routes!(events::mark_read, events::mark_unread))
}

/// The operators' routes (never limited); `/metrics` only when `metrics`.
pub fn operations(metrics: bool) -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(operations::healthz))
        .routes(routes!(operations::readyz))
        .routes(routes!(openapi::serve));
    if metrics {
        router.routes(routes!(operations::metrics_text))
    } else {
        router
    }
}

/// Every route's description, for the document.
pub fn document() -> utoipa::openapi::OpenApi {
    api().merge(operations(true)).into_openapi()
}
