//! The audit and notification feed (`/systemevent`): an organization's
//! events as the caller may see them (owners and administrators: all; other
//! users: their own and those of the workspaces they administer), filtered
//! by the platform's numbers for contexts and events, with each reader's
//! read state.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::Service;
use crate::service::params::{self, Bound, Page};
use crate::store::events::{FeedFilter, FeedScope};
use crate::store::types::now;

/// The platform's context numbers, then ours (14 on). The index is the number.
pub const CONTEXTS: [&str; 18] = [
    "workspace",
    "bucket",
    "repo",
    "user",
    "org",
    "workspaceuser",
    "apikey",
    "usersettings",
    "orgsettings",
    "flashbacknode",
    "orgkey",
    "aillm",
    "aillmapikey",
    "conversation",
    "policy",
    "policyviolation",
    "policyalert",
    "webhook",
];

/// The platform's event numbers, then ours (3 on).
pub const EVENTS: [&str; 5] = ["created", "updated", "deleted", "attached", "detached"];

/// Most ids one mark-as-read call takes.
pub const MAX_MARK_IDS: usize = 100;

/// `ListSystemEvents`' input, as it arrives.
#[derive(Debug, Clone, Default)]
pub struct FeedQuery {
    pub from_timestamp: Option<String>,
    pub to_timestamp: Option<String>,
    pub context_id: Option<String>,
    pub context: Option<i64>,
    pub event: Option<i64>,
    pub user_id: Option<String>,
    pub workspace_id: Option<String>,
    pub show_unread: Option<bool>,
    pub take: Option<i64>,
    pub skip: Option<i64>,
}

/// An event as the feed shows it.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub context_id: Option<Uuid>,
    pub context: String,
    pub event: String,
    pub org_id: Uuid,
    pub user_id: Option<Uuid>,
    pub user_name: String,
    pub user_email: String,
    pub workspace_id: Option<Uuid>,
    /// The event's data, as JSON text.
    pub json_data: Option<String>,
    /// The reader has not read it.
    pub unread: bool,
}

/// A page of the feed.
#[derive(Debug, Clone)]
pub struct FeedPage {
    pub events: Vec<FeedEvent>,
    pub total: i64,
    pub take: i64,
    pub skip: i64,
}

/// A number from a list, or 400 naming the parameter.
fn numbered(
    name: &str,
    list: &[&'static str],
    n: Option<i64>,
) -> Result<Option<&'static str>, ApiError> {
    n.map(|n| {
        usize::try_from(n)
            .ok()
            .and_then(|i| list.get(i).copied())
            .ok_or_else(|| {
                ApiError::InvalidArgument(format!(
                    "{name} must be a number from 0 to {}",
                    list.len() - 1
                ))
            })
    })
    .transpose()
}

impl Service {
    fn feed_scope(caller: &Caller) -> FeedScope {
        if caller.role.is_org_admin() {
            FeedScope::Org
        } else {
            FeedScope::Member(caller.user_id)
        }
    }

    /// A page of the events the caller may see, newest first; the last 24
    /// hours unless a range is given.
    pub async fn list_system_events(
        &self,
        caller: &Caller,
        query: FeedQuery,
    ) -> Result<FeedPage, ApiError> {
        let page = Page::new(query.take, query.skip)?;
        let from = params::time_bound(
            "from_timestamp",
            query.from_timestamp.as_deref(),
            Bound::Start,
        )?;
        let to = params::time_bound("to_timestamp", query.to_timestamp.as_deref(), Bound::End)?;
        let to = to.unwrap_or_else(now);
        let from = from.unwrap_or(to - TimeDelta::hours(24));
        if from >= to {
            return Err(ApiError::InvalidArgument(
                "from_timestamp must be before to_timestamp".into(),
            ));
        }
        let filter = FeedFilter {
            org_id: caller.org_id,
            scope: Self::feed_scope(caller),
            reader: caller.user_id,
            from,
            to,
            context: numbered("context", &CONTEXTS, query.context)?,
            context_id: non_empty_uuid("contextId", query.context_id.as_deref())?,
            event: numbered("event", &EVENTS, query.event)?,
            user_id: non_empty_uuid("userId", query.user_id.as_deref())?,
            workspace_id: non_empty_uuid("workspaceId", query.workspace_id.as_deref())?,
            unread_only: query.show_unread.unwrap_or(false),
            take: page.take,
            skip: page.skip,
        };
        let (rows, total) = self
            .store
            .feed(filter)
            .await
            .map_err(ApiError::from_store("Failed to list system events"))?;
        let events = rows
            .into_iter()
            .map(|row| {
                let e = row.event;
                let name = [row.user_name, row.user_last_name]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                FeedEvent {
                    id: e.id,
                    at: e.created_at,
                    context_id: e.context_id,
                    context: e.context,
                    event: e.event,
                    org_id: e.org_id,
                    user_id: e.user_id,
                    user_name: name,
                    user_email: row.user_email.unwrap_or_default(),
                    workspace_id: e.workspace_id,
                    json_data: e.json_data.map(|d| d.to_string()),
                    unread: row.read_at.is_none(),
                }
            })
            .collect();
        Ok(FeedPage {
            events,
            total,
            take: page.take,
            skip: page.skip,
        })
    }

    /// Marks events read (or unread) for the caller. Ids of events the
    /// caller cannot see change nothing.
    pub async fn mark_system_events(
        &self,
        caller: &Caller,
        ids: Vec<String>,
        read: bool,
    ) -> Result<(), ApiError> {
        if ids.is_empty() {
            return Err(ApiError::InvalidArgument("id or ids is required".into()));
        }
        let ids = ids
            .iter()
            .map(|id| {
                params::uuid("ids", id)
                    .map_err(|_| ApiError::InvalidArgument("ids must be UUIDs".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.store
            .mark_events(
                caller.org_id,
                Self::feed_scope(caller),
                caller.user_id,
                ids,
                read,
                now(),
            )
            .await
            .map_err(ApiError::from_store("Failed to mark system events"))?;
        Ok(())
    }
}

/// A list of ids to mark holds at most [`MAX_MARK_IDS`] (REST's `id` may
/// come beside it).
pub fn mark_ids_count(ids: usize) -> Result<(), ApiError> {
    if ids > MAX_MARK_IDS {
        return Err(ApiError::InvalidArgument(format!(
            "ids must hold at most {MAX_MARK_IDS} ids"
        )));
    }
    Ok(())
}

/// An optional id where the platform's client may send an empty string for
/// "any".
fn non_empty_uuid(name: &str, value: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    params::optional_uuid(name, value.filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::audit::{Action, Context};

    #[test]
    fn every_context_and_action_has_a_number() {
        for context in [
            Context::Conversation,
            Context::AiLlm,
            Context::Policy,
            Context::PolicyViolation,
            Context::PolicyAlert,
            Context::Webhook,
        ] {
            assert!(CONTEXTS.contains(&context.as_str()), "{context:?}");
        }
        assert_eq!(CONTEXTS[11], "aillm");
        assert_eq!(CONTEXTS[13], "conversation");
        for action in [
            Action::Created,
            Action::Updated,
            Action::Deleted,
            Action::Attached,
            Action::Detached,
        ] {
            assert!(EVENTS.contains(&action.as_str()), "{action:?}");
        }
        assert!(numbered("context", &CONTEXTS, Some(18)).is_err());
        assert!(numbered("context", &CONTEXTS, Some(-1)).is_err());
        assert_eq!(
            numbered("event", &EVENTS, Some(2)).expect("valid"),
            Some("deleted")
        );
    }
}
