//! The audit and notification feed: pages of an organization's events as a
//! caller may see them, with the caller's read state; and the operators'
//! export, read in keyset pages so any number of events streams in constant
//! memory.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::admin::EventRow;
use super::schema::{system_event_reads, system_events, users, workspace_members};
use super::types::{SqlTime, SqlUuid};
use super::{Store, StoreError};
use crate::{with_conn, write_tx};

/// Whose events a caller may read, within their organization.
#[derive(Debug, Clone, Copy)]
pub enum FeedScope {
    /// Every event (organization owners and administrators).
    Org,
    /// Their own events and those of the workspaces they administer.
    Member(Uuid),
}

/// Which events a feed page shows.
#[derive(Debug, Clone)]
pub struct FeedFilter {
    pub org_id: Uuid,
    pub scope: FeedScope,
    /// The reader, whose read state is shown.
    pub reader: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub context: Option<&'static str>,
    pub context_id: Option<Uuid>,
    pub event: Option<&'static str>,
    pub user_id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub unread_only: bool,
    pub take: i64,
    pub skip: i64,
}

/// An event as the feed shows it: who caused it and whether the reader has
/// read it.
#[derive(Debug, Clone, Queryable)]
pub struct FeedRow {
    pub event: EventRow,
    pub user_name: Option<String>,
    pub user_last_name: Option<String>,
    pub user_email: Option<String>,
    pub read_at: Option<DateTime<Utc>>,
}

/// The events a [`FeedFilter`] selects, with their author and read state.
macro_rules! feed_query {
    ($f:expr) => {{
        let f: &FeedFilter = $f;
        let mut q = system_events::table
            .left_join(users::table.on(users::id.nullable().eq(system_events::user_id)))
            .left_join(
                system_event_reads::table.on(system_event_reads::event_id
                    .eq(system_events::id)
                    .and(system_event_reads::user_id.eq(SqlUuid(f.reader)))),
            )
            .filter(system_events::org_id.eq(SqlUuid(f.org_id)))
            .filter(system_events::created_at.ge(SqlTime(f.from)))
            .filter(system_events::created_at.lt(SqlTime(f.to)))
            .into_boxed();
        if let FeedScope::Member(user_id) = f.scope {
            let administered = workspace_members::table
                .filter(workspace_members::user_id.eq(SqlUuid(user_id)))
                .filter(workspace_members::access.eq("admin"))
                .select(workspace_members::workspace_id.nullable());
            q = q.filter(
                system_events::user_id
                    .eq(SqlUuid(user_id))
                    .or(system_events::workspace_id.eq_any(administered)),
            );
        }
        if let Some(context) = f.context {
            q = q.filter(system_events::context.eq(context));
        }
        if let Some(id) = f.context_id {
            q = q.filter(system_events::context_id.eq(SqlUuid(id)));
        }
        if let Some(event) = f.event {
            q = q.filter(system_events::event.eq(event));
        }
        if let Some(id) = f.user_id {
            q = q.filter(system_events::user_id.eq(SqlUuid(id)));
        }
        if let Some(id) = f.workspace_id {
            q = q.filter(system_events::workspace_id.eq(SqlUuid(id)));
        }
        if f.unread_only {
            q = q.filter(system_event_reads::event_id.nullable().is_null());
        }
        q
    }};
}

/// Which events an export reads, and in which order.
#[derive(Debug, Clone)]
pub struct ExportFilter {
    pub org_id: Uuid,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub context: Option<String>,
    /// Only events after this one in the export's order (to resume).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub oldest_first: bool,
}

impl Store {
    /// A page of the feed, newest first, and how many events match.
    pub async fn feed(&self, filter: FeedFilter) -> Result<(Vec<FeedRow>, i64), StoreError> {
        self.read(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| {
                    let total = feed_query!(&filter).count().get_result::<i64>(c).await?;
                    let rows = feed_query!(&filter)
                        .order((system_events::created_at.desc(), system_events::id.desc()))
                        .limit(filter.take)
                        .offset(filter.skip)
                        .select((
                            EventRow::as_select(),
                            users::name.nullable(),
                            users::last_name.nullable(),
                            users::email.nullable(),
                            system_event_reads::read_at.nullable(),
                        ))
                        .load::<FeedRow>(c)
                        .await?;
                    diesel::QueryResult::Ok((rows, total))
                })?)
            }
            .boxed()
        })
        .await
    }

    /// Marks `ids` read (or unread) for `reader`, among the events of
    /// `scope` in `org_id`; others are left alone. Returns how many of the
    /// ids the reader may see.
    pub async fn mark_events(
        &self,
        org_id: Uuid,
        scope: FeedScope,
        reader: Uuid,
        ids: Vec<Uuid>,
        read: bool,
        at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let mut q = system_events::table
                        .filter(system_events::org_id.eq(SqlUuid(org_id)))
                        .filter(
                            system_events::id
                                .eq_any(ids.iter().copied().map(SqlUuid).collect::<Vec<_>>()),
                        )
                        .select(system_events::id)
                        .into_boxed();
                    if let FeedScope::Member(user_id) = scope {
                        let administered = workspace_members::table
                            .filter(workspace_members::user_id.eq(SqlUuid(user_id)))
                            .filter(workspace_members::access.eq("admin"))
                            .select(workspace_members::workspace_id.nullable());
                        q = q.filter(
                            system_events::user_id
                                .eq(SqlUuid(user_id))
                                .or(system_events::workspace_id.eq_any(administered)),
                        );
                    }
                    let visible: Vec<Uuid> = q.load(c).await?;
                    for id in &visible {
                        if read {
                            diesel::insert_into(system_event_reads::table)
                                .values((
                                    system_event_reads::user_id.eq(SqlUuid(reader)),
                                    system_event_reads::event_id.eq(SqlUuid(*id)),
                                    system_event_reads::read_at.eq(SqlTime(at)),
                                ))
                                .on_conflict_do_nothing()
                                .execute(c)
                                .await?;
                        } else {
                            diesel::delete(
                                system_event_reads::table
                                    .filter(system_event_reads::user_id.eq(SqlUuid(reader)))
                                    .filter(system_event_reads::event_id.eq(SqlUuid(*id))),
                            )
                            .execute(c)
                            .await?;
                        }
                    }
                    Ok(visible.len())
                })
            }
            .boxed()
        })
        .await
    }

    /// The time of an event of `org_id`, to resume an export after it.
    pub async fn event_time(
        &self,
        org_id: Uuid,
        id: Uuid,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.run(move |conn| {
            async move {
                let query = system_events::table
                    .filter(system_events::org_id.eq(SqlUuid(org_id)))
                    .filter(system_events::id.eq(SqlUuid(id)))
                    .select(system_events::created_at);
                Ok(with_conn!(&mut *conn, |c| query
                    .first::<DateTime<Utc>>(c)
                    .await
                    .optional())?)
            }
            .boxed()
        })
        .await
    }

    /// Up to `limit` events of an export, in its order, after
    /// `filter.after` (a keyset page: the next page starts after the last
    /// row of this one, whatever the number of events).
    pub async fn export_page(
        &self,
        filter: ExportFilter,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        self.run(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| {
                    let mut q = system_events::table
                        .filter(system_events::org_id.eq(SqlUuid(filter.org_id)))
                        .into_boxed();
                    if let Some(since) = filter.since {
                        q = q.filter(system_events::created_at.ge(SqlTime(since)));
                    }
                    if let Some(until) = filter.until {
                        q = q.filter(system_events::created_at.lt(SqlTime(until)));
                    }
                    if let Some(context) = &filter.context {
                        q = q.filter(system_events::context.eq(context.clone()));
                    }
                    if let Some((at, id)) = filter.after {
                        let (at, id) = (SqlTime(at), SqlUuid(id));
                        q = if filter.oldest_first {
                            q.filter(
                                system_events::created_at
                                    .gt(at)
                                    .or(system_events::created_at
                                        .eq(at)
                                        .and(system_events::id.gt(id))),
                            )
                        } else {
                            q.filter(
                                system_events::created_at
                                    .lt(at)
                                    .or(system_events::created_at
                                        .eq(at)
                                        .and(system_events::id.lt(id))),
                            )
                        };
                    }
                    q = if filter.oldest_first {
                        q.order((system_events::created_at.asc(), system_events::id.asc()))
                    } else {
                        q.order((system_events::created_at.desc(), system_events::id.desc()))
                    };
                    q.limit(limit).select(EventRow::as_select()).load(c).await
                })?)
            }
            .boxed()
        })
        .await
    }
}
