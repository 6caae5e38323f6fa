//! The audit trail: what each operation writes to `system_events`, in the
//! same transaction as the change it records.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::RequestContext;
use crate::store::conversations::NewEvent;
use crate::store::types::{SqlJson, SqlTime, SqlUuid};

/// The resource an event is about (`system_events.context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Conversation,
    /// A model provider configuration.
    AiLlm,
    /// A governance policy.
    Policy,
    /// A policy's violation.
    PolicyViolation,
    /// An alert a violation raised.
    PolicyAlert,
    /// An organization's webhook.
    Webhook,
}

impl Context {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Conversation => "conversation",
            Context::AiLlm => "aillm",
            Context::Policy => "policy",
            Context::PolicyViolation => "policyviolation",
            Context::PolicyAlert => "policyalert",
            Context::Webhook => "webhook",
        }
    }
}

/// What happened to it (`system_events.event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Deleted,
    Attached,
    Detached,
}

impl Action {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
            Action::Attached => "attached",
            Action::Detached => "detached",
        }
    }
}

/// Where an event belongs and who caused it.
pub struct Scope {
    pub org_id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub user_id: Uuid,
}

/// An event about `(context, context_id)`; `data` gets the request's
/// transport and id added.
pub fn event(
    scope: Scope,
    context: Context,
    context_id: Uuid,
    action: Action,
    mut data: serde_json::Map<String, serde_json::Value>,
    ctx: &RequestContext,
    at: DateTime<Utc>,
) -> NewEvent {
    stamp(&mut data, ctx);
    NewEvent {
        id: SqlUuid(Uuid::now_v7()),
        org_id: SqlUuid(scope.org_id),
        workspace_id: scope.workspace_id.map(SqlUuid),
        user_id: Some(SqlUuid(scope.user_id)),
        context: context.as_str().into(),
        context_id: Some(SqlUuid(context_id)),
        event: action.as_str().into(),
        json_data: Some(SqlJson(serde_json::Value::Object(data))),
        created_at: SqlTime(at),
    }
}

/// An event's data: `fields`, and the request's transport and id.
pub fn data<const N: usize>(
    fields: [(&str, serde_json::Value); N],
    ctx: &RequestContext,
) -> serde_json::Value {
    let mut data: serde_json::Map<String, serde_json::Value> =
        fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    stamp(&mut data, ctx);
    serde_json::Value::Object(data)
}

/// Adds the request's transport and id to an event's data.
fn stamp(data: &mut serde_json::Map<String, serde_json::Value>, ctx: &RequestContext) {
    data.insert("transport".into(), ctx.transport.as_str().into());
    data.insert("requestId".into(), ctx.request_id.clone().into());
}
