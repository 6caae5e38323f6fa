//! Listing conversations (newest first).
//!
//! A page costs about the same whatever the table holds: visibility is split
//! into sources that each walk one `(…, created_at, id)` index backwards (the
//! organization; or the caller's own plus each workspace they administer),
//! each stopping after `skip + take` rows, merged here. The total comes from
//! `conversation_counts` (a few rows per creator, workspace and repository,
//! and the deltas not folded into them yet); a time filter's from the hourly
//! counts of the whole hours it covers and the rows of the two partial hours
//! at its ends. Repository and creator come in the same query (joins), not
//! one per row.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::count::count;
use super::{ConversationFilter, ConversationRow, Visibility, administered, bounded};
use crate::store::schema::{conversations, repos, users};
use crate::store::types::SqlUuid;
use crate::store::{Conn, Store, StoreError};
use crate::with_conn;

/// One index-ordered stream of visible conversations; a list merges them.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The whole organization: `(org_id, created_at, id)`.
    Organization,
    /// A creator's own: `(created_by, created_at, id)`.
    Creator(Uuid),
    /// A workspace the caller administers: `(workspace_id, created_at, id)`.
    Workspace(Uuid),
}

impl Store {
    /// A page of the matching conversations, newest first, and how many match
    /// in all.
    pub async fn list_conversations(
        &self,
        filter: ConversationFilter,
        take: i64,
        skip: i64,
    ) -> Result<(Vec<ConversationRow>, i64), StoreError> {
        self.read(move |conn| {
            async move {
                let take_rows = usize::try_from(take).unwrap_or(usize::MAX);
                sorts(conn, false).await?;
                let walked = walk(conn, &filter, take, skip).await;
                sorts(conn, true).await?;
                let page = match walked? {
                    Walked::Rows(rows) => rows,
                    Walked::Keys(ids) => by_ids(conn, ids).await?,
                };
                // A short first page is the whole set: nothing to count.
                let total = if skip == 0 && page.len() < take_rows {
                    page.len() as i64
                } else {
                    count(conn, &filter).await?
                };
                Ok((page, total))
            }
            .boxed()
        })
        .await
    }
}

/// What the source walks found: the page's rows, or (past the first page)
/// its ids.
enum Walked {
    Rows(Vec<ConversationRow>),
    Keys(Vec<SqlUuid>),
}

/// Walks each source for a page.
async fn walk(
    conn: &mut Conn,
    filter: &ConversationFilter,
    take: i64,
    skip: i64,
) -> Result<Walked, StoreError> {
    let skip_rows = usize::try_from(skip).unwrap_or(usize::MAX);
    let take_rows = usize::try_from(take).unwrap_or(usize::MAX);
    if skip == 0 {
        // The first page: its rows straight from each source.
        let mut rows: Vec<ConversationRow> = Vec::new();
        for source in sources(conn, filter).await? {
            rows.extend(newest(conn, filter, source, take).await?);
        }
        rows.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
        rows.dedup_by_key(|r| r.id);
        rows.truncate(take_rows);
        return Ok(Walked::Rows(rows));
    }
    // Further pages: the keys of the newest `skip + take` of each source
    // (nothing joined), merged; the page's rows are read by id after.
    let window = skip.saturating_add(take);
    let mut keys: Vec<(DateTime<Utc>, Uuid)> = Vec::new();
    for source in sources(conn, filter).await? {
        keys.extend(newest_keys(conn, filter, source, window).await?);
    }
    keys.sort_by_key(|k| std::cmp::Reverse(*k));
    keys.dedup();
    Ok(Walked::Keys(
        keys.into_iter()
            .skip(skip_rows)
            .take(take_rows)
            .map(|(_, id)| SqlUuid(id))
            .collect(),
    ))
}

/// Turns PostgreSQL's sorts and parallel plans off (or back on) on this
/// connection: a page is an index walk that stops after `skip + take` rows.
/// With stale statistics (autovacuum off, after a bulk load) the planner,
/// believing a source holds a few rows, sorted all million of them instead
/// (2.4 s for a page); with fresh ones it started parallel workers for the
/// same walk (40-70 ms on two cores). No-op on SQLite.
async fn sorts(conn: &mut Conn, on: bool) -> Result<(), StoreError> {
    use diesel_async::SimpleAsyncConnection as _;
    if let Conn::Pg(c) = conn {
        let sql = if on {
            "RESET enable_sort; RESET max_parallel_workers_per_gather"
        } else {
            "SET enable_sort = off; SET max_parallel_workers_per_gather = 0"
        };
        c.batch_execute(sql).await?;
    }
    Ok(())
}

/// The index-ordered streams a filter's visibility is made of.
async fn sources(conn: &mut Conn, filter: &ConversationFilter) -> Result<Vec<Source>, StoreError> {
    Ok(match filter.visibility {
        Visibility::Organization => vec![Source::Organization],
        Visibility::OwnAndAdministered { user_id } => {
            let administered = with_conn!(&mut *conn, |c| {
                administered!(user_id).load::<Uuid>(c).await
            })?;
            std::iter::once(Source::Creator(user_id))
                .chain(administered.into_iter().map(Source::Workspace))
                .collect()
        }
    })
}

/// Which index a source's walk takes: the most selective of the equalities
/// it has (a creator's conversations are fewer than a repository's, a
/// repository's than its workspace's, a workspace's than its organization's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Creator,
    Repo,
    Workspace,
    Organization,
}

/// The rows of one source that match the filter, as a boxed query for the
/// backend of the surrounding `with_conn!` arm, written so that only the
/// driving equality's `(…, created_at, id)` index can serve it: the others
/// compare `coalesce(column, column)`, which no index serves. The plan then
/// does not depend on statistics (with stale ones, PostgreSQL and SQLite
/// both picked a repository's index to find a creator's few rows among a
/// million, or sorted every row of the organization).
macro_rules! in_source {
    ($filter:expr, $source:expr) => {{
        let f: &ConversationFilter = $filter;
        let source: Source = $source;
        let creator = match source {
            Source::Creator(u) => Some(u),
            _ => None,
        };
        let workspace = match source {
            Source::Workspace(w) => Some(w),
            _ => None,
        };
        let driver = if creator.or(f.created_by).is_some() {
            Driver::Creator
        } else if f.repo_id.is_some() {
            Driver::Repo
        } else if workspace.or(f.workspace_id).is_some() {
            Driver::Workspace
        } else {
            Driver::Organization
        };
        macro_rules! equal {
            ($q:expr, $column:expr, $value:expr, $drives:expr) => {{
                let value = SqlUuid($value);
                if $drives {
                    $q.filter($column.eq(value))
                } else {
                    $q.filter($crate::store::types::coalesce($column, $column).eq(value))
                }
            }};
        }
        let mut q = conversations::table.into_boxed();
        q = equal!(
            q,
            conversations::org_id,
            f.org_id,
            driver == Driver::Organization
        );
        for u in [creator, f.created_by].into_iter().flatten() {
            q = equal!(q, conversations::created_by, u, driver == Driver::Creator);
        }
        for w in [workspace, f.workspace_id].into_iter().flatten() {
            q = equal!(
                q,
                conversations::workspace_id,
                w,
                driver == Driver::Workspace
            );
        }
        if let Some(r) = f.repo_id {
            q = equal!(q, conversations::repo_id, r, driver == Driver::Repo);
        }
        bounded!(q, f)
    }};
}

/// The newest `window` rows of one source that match the filter.
async fn newest(
    conn: &mut Conn,
    filter: &ConversationFilter,
    source: Source,
    window: i64,
) -> Result<Vec<ConversationRow>, StoreError> {
    Ok(with_conn!(&mut *conn, |c| {
        let q = in_source!(filter, source);
        q.inner_join(repos::table)
            .inner_join(users::table)
            .select(ConversationRow::as_select())
            .order((conversations::created_at.desc(), conversations::id.desc()))
            .limit(window)
            .load(c)
            .await
    })?)
}

/// The query of [`newest_keys`]: it reads only its index (on SQLite, whose
/// indexes carry every column a walk compares; see migration
/// `covering_walks`).
macro_rules! keys_in_source {
    ($filter:expr, $source:expr, $window:expr) => {
        in_source!($filter, $source)
            .select((conversations::created_at, conversations::id))
            .order((conversations::created_at.desc(), conversations::id.desc()))
            .limit($window)
    };
}

/// The keys (time, id) of the newest `window` rows of one source that match
/// the filter.
async fn newest_keys(
    conn: &mut Conn,
    filter: &ConversationFilter,
    source: Source,
    window: i64,
) -> Result<Vec<(DateTime<Utc>, Uuid)>, StoreError> {
    Ok(with_conn!(&mut *conn, |c| {
        keys_in_source!(filter, source, window).load(c).await
    })?)
}

/// The rows of a page, by their ids, newest first.
async fn by_ids(conn: &mut Conn, ids: Vec<SqlUuid>) -> Result<Vec<ConversationRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(with_conn!(&mut *conn, |c| {
        conversations::table
            .filter(conversations::id.eq_any(&ids))
            .inner_join(repos::table)
            .inner_join(users::table)
            .select(ConversationRow::as_select())
            .order((conversations::created_at.desc(), conversations::id.desc()))
            .load(c)
            .await
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
    use diesel::sql_types::{Integer, Text};
    use diesel::sqlite::{Sqlite, SqliteConnection};

    /// `EXPLAIN QUERY PLAN` of a query, with its binds.
    struct Explain<Q>(Q);

    impl<Q> QueryId for Explain<Q> {
        type QueryId = ();
        const HAS_STATIC_QUERY_ID: bool = false;
    }

    impl<Q: QueryFragment<Sqlite>> QueryFragment<Sqlite> for Explain<Q> {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
            out.push_sql("EXPLAIN QUERY PLAN ");
            self.0.walk_ast(out.reborrow())
        }
    }

    impl<Q> Query for Explain<Q> {
        type SqlType = (Integer, Integer, Integer, Text);
    }

    impl<Q> diesel::RunQueryDsl<SqliteConnection> for Explain<Q> {}

    /// On SQLite, a page past the first walks each source's index without
    /// reading the table, whatever the filter: the index carries every
    /// column the walk compares, and hands the rows over in order.
    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_walks_read_only_their_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let store = Store::open(
            &format!("sqlite://{}", path.display()),
            &crate::store::StoreOptions::default(),
        )
        .expect("open");
        store.migrate().await.expect("migrate");
        let mut c = SqliteConnection::establish(path.to_str().expect("utf-8")).expect("connect");
        let (org, user, workspace) = (
            Uuid::from_u128(10),
            Uuid::from_u128(11),
            Uuid::from_u128(12),
        );
        type Narrow = fn(&mut ConversationFilter);
        let narrowing: [(&str, Narrow); 7] = [
            ("none", |_| {}),
            ("repoId", |f| f.repo_id = Some(Uuid::from_u128(1))),
            ("workspaceId", |f| f.workspace_id = Some(Uuid::from_u128(2))),
            ("userId", |f| f.created_by = Some(Uuid::from_u128(3))),
            ("from", |f| f.from = Some(Utc::now())),
            ("from and to", |f| {
                f.from = Some(Utc::now());
                f.until = Some(Utc::now());
            }),
            ("deleted too", |f| f.show_deleted = true),
        ];
        let sources = [
            (Visibility::Organization, Source::Organization),
            (
                Visibility::OwnAndAdministered { user_id: user },
                Source::Creator(user),
            ),
            (
                Visibility::OwnAndAdministered { user_id: user },
                Source::Workspace(workspace),
            ),
        ];
        for (visibility, source) in sources {
            for (name, narrow) in narrowing {
                let mut filter = ConversationFilter::visible(org, visibility);
                narrow(&mut filter);
                let plan: Vec<(i32, i32, i32, String)> = diesel::RunQueryDsl::load(
                    Explain(keys_in_source!(&filter, source, 1050)),
                    &mut c,
                )
                .expect("explain");
                let steps: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
                assert!(
                    steps.len() == 1 && steps[0].contains("USING COVERING INDEX conversations_"),
                    "{source:?}, {name}: {steps:?}"
                );
            }
        }
    }
}
