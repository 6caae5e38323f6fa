//! The audit and notification feed: `POST /systemevent` and the caller's
//! read state, `POST`/`DELETE /systemevent/read`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::conversations::dto::{SuccessReply, rfc3339};
use super::error::{ApiErrors, ErrorReply};
use super::extract::{Authenticated, JsonBody, JsonText};
use super::policies::dto::integer;
use crate::error::ApiError;
use crate::service::events::{FeedEvent, FeedQuery, mark_ids_count};

/// `POST /systemevent`: the platform's SystemEventQueryRequest.
#[derive(Deserialize, ToSchema)]
pub struct SystemEventQueryBody {
    /// ISO 8601, inclusive [default: 24 hours before `to_timestamp`].
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub from_timestamp: JsonText,
    /// ISO 8601, inclusive [default: now].
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub to_timestamp: JsonText,
    /// Events about this resource.
    #[serde(default, rename = "contextId")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub context_id: JsonText,
    /// The resource kind: the platform's numbers (aillm 11, conversation
    /// 13, ...) and ours (policy 14, policyviolation 15, policyalert 16,
    /// webhook 17).
    #[serde(default)]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 17)]
    pub context: Value,
    /// created 0, updated 1, deleted 2, and ours: attached 3, detached 4.
    #[serde(default)]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 4)]
    pub event: Value,
    /// Events this user caused.
    #[serde(default, rename = "userId")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub user_id: JsonText,
    #[serde(default, rename = "workspaceId")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub workspace_id: JsonText,
    /// Only events the caller has not read.
    #[serde(default, rename = "showUnread")]
    #[schema(value_type = Option<bool>)]
    pub show_unread: Value,
    #[serde(default)]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub skip: Value,
    /// 1 to 100 [default: 20].
    #[serde(default)]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub take: Value,
}

/// The platform's SystemEventResponse.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemEventDto {
    /// A UUID (the platform's are numbers; its client passes ids through).
    #[schema(format = Uuid)]
    pub id: String,
    pub timestamp: String,
    #[schema(format = Uuid)]
    pub context_id: Option<String>,
    pub context: String,
    pub event: String,
    #[schema(format = Uuid)]
    pub org_id: String,
    #[schema(format = Uuid)]
    pub user_id: Option<String>,
    pub user_name: String,
    pub user_email: String,
    #[schema(format = Uuid)]
    pub workspace_id: Option<String>,
    /// The event's details, as JSON text.
    pub json_data: Option<String>,
    /// The caller has not read it.
    pub show_unread: bool,
}

impl From<FeedEvent> for SystemEventDto {
    fn from(e: FeedEvent) -> Self {
        SystemEventDto {
            id: e.id.to_string(),
            timestamp: rfc3339(e.at),
            context_id: e.context_id.map(|id| id.to_string()),
            context: e.context,
            event: e.event,
            org_id: e.org_id.to_string(),
            user_id: e.user_id.map(|id| id.to_string()),
            user_name: e.user_name,
            user_email: e.user_email,
            workspace_id: e.workspace_id.map(|id| id.to_string()),
            json_data: e.json_data,
            show_unread: e.unread,
        }
    }
}

/// `POST /systemevent`.
#[derive(Serialize, ToSchema)]
pub struct SystemEventsReply {
    pub success: bool,
    /// Newest first.
    pub events: Vec<SystemEventDto>,
    pub total: i64,
    pub skip: i64,
    pub take: i64,
}

/// A JSON field meant to be a boolean.
fn boolean(name: &str, value: &Value) -> Result<Option<bool>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        _ => Err(ApiError::InvalidArgument(format!(
            "{name} must be true or false"
        ))),
    }
}

fn feed_query(body: SystemEventQueryBody) -> Result<FeedQuery, ApiError> {
    Ok(FeedQuery {
        from_timestamp: body.from_timestamp.text("from_timestamp")?,
        to_timestamp: body.to_timestamp.text("to_timestamp")?,
        context_id: body.context_id.text("contextId")?,
        context: integer("context", &body.context)?,
        event: integer("event", &body.event)?,
        user_id: body.user_id.text("userId")?,
        workspace_id: body.workspace_id.text("workspaceId")?,
        show_unread: boolean("showUnread", &body.show_unread)?,
        take: integer("take", &body.take)?,
        skip: integer("skip", &body.skip)?,
    })
}

/// The organization's events the caller may read, newest first: owners
/// and administrators all of them; other users their own and those of the
/// workspaces they administer. Each says whether the caller has read it.
#[utoipa::path(post, path = "/systemevent", tag = "systemevent",
    request_body = SystemEventQueryBody,
    responses(
        ApiErrors,
        (status = 200, description = "A page of events", body = SystemEventsReply),
        (status = 400, description = "Invalid body: times, numbers, ids, take over 100", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn list_system_events(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<SystemEventQueryBody>,
) -> Result<Json<SystemEventsReply>, ApiError> {
    let page = service
        .list_system_events(&caller, feed_query(body)?)
        .await?;
    Ok(Json(SystemEventsReply {
        success: true,
        events: page.events.into_iter().map(SystemEventDto::from).collect(),
        total: page.total,
        skip: page.skip,
        take: page.take,
    }))
}

/// `POST`/`DELETE /systemevent/read`: one id, or a list.
#[derive(Deserialize, ToSchema)]
pub struct ReadIdsBody {
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Value,
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, max_items = 100)]
    pub ids: Value,
}

fn read_ids(body: ReadIdsBody) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::InvalidArgument("ids must be UUIDs".into());
    let mut out = Vec::new();
    match body.id {
        Value::Null => {}
        Value::String(s) => out.push(s),
        _ => return Err(bad()),
    }
    match body.ids {
        Value::Null => {}
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::InvalidArgument(
                "ids must hold at least one id".into(),
            ));
        }
        Value::Array(items) => {
            mark_ids_count(items.len())?;
            for item in items {
                match item {
                    Value::String(s) => out.push(s),
                    _ => return Err(bad()),
                }
            }
        }
        _ => return Err(bad()),
    }
    Ok(out)
}

/// Mark events read for the caller (ids of events the caller cannot see
/// change nothing).
#[utoipa::path(post, path = "/systemevent/read", tag = "systemevent",
    request_body = ReadIdsBody,
    responses(
        ApiErrors,
        (status = 200, description = "Marked", body = SuccessReply),
        (status = 400, description = "No id, or one that is no UUID, or over 100", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn mark_read(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<ReadIdsBody>,
) -> Result<Json<SuccessReply>, ApiError> {
    mark(&service, &caller, body, true).await
}

/// Marks the body's events read (or unread) for the caller.
async fn mark(
    service: &AppState,
    caller: &crate::domain::Caller,
    body: ReadIdsBody,
    read: bool,
) -> Result<Json<SuccessReply>, ApiError> {
    service
        .mark_system_events(caller, read_ids(body)?, read)
        .await?;
    Ok(Json(SuccessReply { success: true }))
}

/// Mark events unread for the caller.
#[utoipa::path(delete, path = "/systemevent/read", tag = "systemevent",
    request_body = ReadIdsBody,
    responses(
        ApiErrors,
        (status = 200, description = "Marked", body = SuccessReply),
        (status = 400, description = "No id, or one that is no UUID, or over 100", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn mark_unread(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(body): JsonBody<ReadIdsBody>,
) -> Result<Json<SuccessReply>, ApiError> {
    mark(&service, &caller, body, false).await
}
