//! Listing conversations (newest first).
//!
//! A page costs about the same whatever the table holds: visibility is split
//! into sources that each walk one `(…, created_at, id)` index backwards (the
//! organization; or the caller's own plus each workspace they administer),
//! each stopping after `skip + take` rows, merged: on SQLite in the same
//! statement that reads the page's rows ([`sqlite_page`]), on PostgreSQL
//! here ([`walk`]). The total comes from `conversation_counts` (a few rows
//! per creator, workspace and repository, and the deltas not folded into
//! them yet); a time filter's from the daily, hourly and (PostgreSQL)
//! ten-minute counts of the whole units it covers and the rows of the two
//! partial units at its ends. Repository and creator come in the same query
//! (joins), not one per row.

use chrono::{DateTime, Utc};
use diesel::backend::Backend;
use diesel::expression::{ValidGrouping, is_aggregate};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Bool};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection as _};
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::count::count;
use super::{ConversationFilter, ConversationRow, Visibility, administered, bounded};
use crate::store::schema::{conversations, repos, users};
use crate::store::types::SqlUuid;
use crate::store::{Conn, SqliteConn, Store, StoreError};
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
    /// All the caller sees, on the organization's index, their visibility
    /// compared on each entry: for a caller who administers more workspaces
    /// than a page takes walks ([`MAX_WALKS`]).
    Visible,
}

/// The most walks a page's statement merges (SQLite takes at most 500
/// members in a `UNION`).
const MAX_WALKS: usize = 64;

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
                let sources = sources(conn, &filter).await?;
                // PostgreSQL walks and counts with sorts and parallel plans
                // off ([`sorts`]), set back even on an error, before the
                // page's rows are read by id (which sorts them).
                if let Conn::Pg(c) = conn {
                    sorts(c, false).await?;
                }
                let walked = walk_and_count(conn, &filter, &sources, take, skip).await;
                if let Conn::Pg(c) = conn {
                    sorts(c, true).await?;
                }
                let (walked, total) = walked?;
                let page = match walked {
                    Walked::Rows(rows) => rows,
                    Walked::Keys(ids) => by_ids(conn, ids).await?,
                };
                Ok((page, total))
            }
            .boxed()
        })
        .await
    }
}

/// A page's walks (its rows, or on PostgreSQL past the first page its ids),
/// and how many conversations match in all.
async fn walk_and_count(
    conn: &mut Conn,
    filter: &ConversationFilter,
    sources: &[Source],
    take: i64,
    skip: i64,
) -> Result<(Walked, i64), StoreError> {
    let take_rows = usize::try_from(take).unwrap_or(usize::MAX);
    let walked = match conn {
        Conn::Sqlite(c, _) => Walked::Rows(sqlite_page(c, filter, sources, take, skip).await?),
        Conn::Pg(c) => walk(c, filter, sources, take, skip).await?,
    };
    let total = match &walked {
        // A short first page is the whole set: nothing to count.
        Walked::Rows(rows) if skip == 0 && rows.len() < take_rows => rows.len() as i64,
        _ => count(conn, filter).await?,
    };
    Ok((walked, total))
}

/// Turns PostgreSQL's sorts and parallel plans off (or back on) on this
/// connection: a page is an index walk that stops after `skip + take` rows,
/// and its total a few index ranges. With stale statistics (autovacuum off,
/// after a bulk load) the planner, believing a source holds a few rows,
/// sorted all million of them instead (2.4 s for a page); with fresh ones it
/// started parallel workers for the same walk (40-70 ms on two cores), and
/// for a time filter's total, whose parts it appended in parallel (15 ms
/// for under 2 ms of work). A statement run this way must not
/// need a sort at all: one it cannot avoid is priced at PostgreSQL's
/// penalty (10¹⁰), far above `jit_above_cost`, and gets JIT-compiled first
/// (280 ms, seen with a page that merged its sources' keys in a sort).
async fn sorts(c: &mut AsyncPgConnection, on: bool) -> Result<(), StoreError> {
    let sql = if on {
        "RESET enable_sort; RESET max_parallel_workers_per_gather"
    } else {
        "SET enable_sort = off; SET max_parallel_workers_per_gather = 0"
    };
    Ok(c.batch_execute(sql).await?)
}

/// The index-ordered streams a filter's visibility is made of.
async fn sources(conn: &mut Conn, filter: &ConversationFilter) -> Result<Vec<Source>, StoreError> {
    Ok(match filter.visibility {
        Visibility::Organization => vec![Source::Organization],
        Visibility::OwnAndAdministered { user_id } => {
            let administered = with_conn!(&mut *conn, |c| {
                administered!(user_id).load::<Uuid>(c).await
            })?;
            if administered.len() >= MAX_WALKS {
                return Ok(vec![Source::Visible]);
            }
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
/// million, or sorted every row of the organization). [`Source::Visible`]
/// compares the caller's visibility the same way.
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
        if let (Source::Visible, Visibility::OwnAndAdministered { user_id }) =
            (source, f.visibility)
        {
            use $crate::store::types::coalesce;
            let (by, ws) = (conversations::created_by, conversations::workspace_id);
            q = q.filter(
                coalesce(by, by)
                    .eq(SqlUuid(user_id))
                    .or(coalesce(ws, ws).eq_any(administered!(user_id))),
            );
        }
        bounded!(q, f)
    }};
}

/// The keys `(created_at, id)` of one source's rows that match the filter:
/// a walk of one index, in its order (the statement around it asks for
/// newest first), which on SQLite reads only that index (it carries every
/// column a walk compares; see migration `covering_walks`).
macro_rules! keys_in_source {
    ($filter:expr, $source:expr) => {
        in_source!($filter, $source).select((conversations::created_at, conversations::id))
    };
}

/// The statement of a SQLite page: the rows, joined with their repository
/// and creator, whose ids [`OnPage`] picks from the sources' walks.
macro_rules! page_query {
    ($filter:expr, $sources:expr, $take:expr, $skip:expr) => {{
        let filter: &ConversationFilter = $filter;
        let walks = $sources
            .iter()
            .map(|&source| keys_in_source!(filter, source))
            .collect();
        conversations::table
            .inner_join(repos::table)
            .inner_join(users::table)
            .filter(OnPage {
                walks,
                take: $take,
                skip: $skip,
            })
            .select(ConversationRow::as_select())
    }};
}

/// A page on SQLite, in one statement ([`page_query!`]): the sources' keys
/// merged, ordered, offset and cut to `take` ids inside the database, and
/// those ids' rows. No key leaves the database: carrying a thousand of them
/// out per source, and reading the page's rows by id in a second statement
/// (as PostgreSQL's [`walk`] does), was most of a page past the first: 1.6–2.0 ms per
/// source and 0.9–1.2 ms.
async fn sqlite_page(
    c: &mut SqliteConn,
    filter: &ConversationFilter,
    sources: &[Source],
    take: i64,
    skip: i64,
) -> Result<Vec<ConversationRow>, StoreError> {
    let mut rows: Vec<ConversationRow> = page_query!(filter, sources, take, skip).load(c).await?;
    // The statement leaves these few rows unordered: ordering them there
    // would sort them in a temporary B-tree, here it is a `Vec` of `take`.
    rows.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
    Ok(rows)
}

/// What PostgreSQL's source walks found: the page's rows, or (past the
/// first page) its ids.
enum Walked {
    Rows(Vec<ConversationRow>),
    Keys(Vec<SqlUuid>),
}

/// A page on PostgreSQL: each source walked on its own (with sorts off, see
/// [`sorts`]), merged here. The first page reads its rows straight from the
/// walks; further pages read only the keys of each source's newest `skip +
/// take`, merge them, and then read the page's rows by id ([`by_ids`]).
/// PostgreSQL does not merge a `UNION` of index walks: the one statement
/// SQLite runs ([`sqlite_page`]) cost it a hash and a sort of every source's
/// keys, 4.2–5.6 ms against 2.2–2.9 for this at `skip` 1,000; and as a
/// `UNION ALL` with stale statistics it hashed a million rows (2 s).
async fn walk(
    c: &mut AsyncPgConnection,
    filter: &ConversationFilter,
    sources: &[Source],
    take: i64,
    skip: i64,
) -> Result<Walked, StoreError> {
    let skip_rows = usize::try_from(skip).unwrap_or(usize::MAX);
    let take_rows = usize::try_from(take).unwrap_or(usize::MAX);
    if skip == 0 {
        let mut rows: Vec<ConversationRow> = Vec::new();
        for &source in sources {
            rows.extend(newest(c, filter, source, take).await?);
        }
        rows.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
        rows.dedup_by_key(|r| r.id);
        rows.truncate(take_rows);
        return Ok(Walked::Rows(rows));
    }
    let window = skip.saturating_add(take);
    let mut keys: Vec<(DateTime<Utc>, Uuid)> = Vec::new();
    for &source in sources {
        keys.extend(newest_keys(c, filter, source, window).await?);
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

/// The newest `window` rows of one source that match the filter.
async fn newest(
    c: &mut AsyncPgConnection,
    filter: &ConversationFilter,
    source: Source,
    window: i64,
) -> Result<Vec<ConversationRow>, StoreError> {
    Ok(in_source!(filter, source)
        .inner_join(repos::table)
        .inner_join(users::table)
        .select(ConversationRow::as_select())
        .order((conversations::created_at.desc(), conversations::id.desc()))
        .limit(window)
        .load(c)
        .await?)
}

/// The keys (time, id) of the newest `window` rows of one source that match
/// the filter.
async fn newest_keys(
    c: &mut AsyncPgConnection,
    filter: &ConversationFilter,
    source: Source,
    window: i64,
) -> Result<Vec<(DateTime<Utc>, Uuid)>, StoreError> {
    Ok(keys_in_source!(filter, source)
        .order((conversations::created_at.desc(), conversations::id.desc()))
        .limit(window)
        .load(c)
        .await?)
}

/// The rows of a page, by their ids, newest first.
async fn by_ids(conn: &mut Conn, ids: Vec<SqlUuid>) -> Result<Vec<ConversationRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(with_conn!(conn, |c| conversations::table
        .filter(conversations::id.eq_any(&ids))
        .inner_join(repos::table)
        .inner_join(users::table)
        .select(ConversationRow::as_select())
        .order((conversations::created_at.desc(), conversations::id.desc()))
        .load(c)
        .await)?)
}

/// Which rows are on the page (SQLite): the ids of a page, `take` of them
/// after `skip`, newest first, among the merged keys of the sources' walks:
///
/// ```sql
/// conversations.id IN (SELECT id FROM (
///     walk₀ UNION walk₁ …
///     ORDER BY 1 DESC, 2 DESC LIMIT take OFFSET skip
/// ) AS page)
/// ```
///
/// The order and the cut belong to the `UNION` itself, not to a query
/// around it: SQLite then merges the walks, each read in its index's order,
/// and stops after `skip + take` keys (0.8 ms for a workspace
/// administrator's page at `skip` 1,000, against 4.8 for collecting both
/// walks in a temporary B-tree and sorting it).
struct OnPage<Q> {
    walks: Vec<Q>,
    take: i64,
    skip: i64,
}

impl<DB: Backend, Q: QueryFragment<DB>> QueryFragment<DB> for OnPage<Q>
where
    i64: ToSql<BigInt, DB>,
    conversations::id: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        conversations::id.walk_ast(out.reborrow())?;
        out.push_sql(" IN (SELECT id FROM (");
        for (i, walk) in self.walks.iter().enumerate() {
            if i > 0 {
                out.push_sql(" UNION ");
            }
            walk.walk_ast(out.reborrow())?;
        }
        out.push_sql(" ORDER BY 1 DESC, 2 DESC LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.take)?;
        out.push_sql(" OFFSET ");
        out.push_bind_param::<BigInt, _>(&self.skip)?;
        out.push_sql(") AS page)");
        Ok(())
    }
}

impl<Q> Expression for OnPage<Q> {
    type SqlType = Bool;
}

impl<Q, QS> AppearsOnTable<QS> for OnPage<Q> {}

impl<Q, GB> ValidGrouping<GB> for OnPage<Q> {
    type IsAggregate = is_aggregate::Never;
}

impl<Q> QueryId for OnPage<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
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

    /// On SQLite, a page (past the first too) walks each source's index
    /// without reading the table, whatever the filter: the index carries
    /// every column the walk compares and hands the keys over in order, so
    /// the `UNION` merges them without sorting. Only the page's own rows are
    /// read by their key.
    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_pages_walk_only_their_indexes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let store = Store::open(
            &format!("sqlite://{}", path.display()),
            &crate::store::StoreOptions::default(),
        )
        .expect("open");
        store.migrate().await.expect("migrate");
        let mut c = SqliteConnection::establish(path.to_str().expect("utf-8")).expect("connect");
        let (org, user) = (Uuid::from_u128(10), Uuid::from_u128(11));
        let (w1, w2) = (Uuid::from_u128(12), Uuid::from_u128(13));
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
        let mine = Visibility::OwnAndAdministered { user_id: user };
        let sources: [(Visibility, &[Source]); 5] = [
            (Visibility::Organization, &[Source::Organization]),
            (mine, &[Source::Visible]),
            (mine, &[Source::Creator(user)]),
            (mine, &[Source::Creator(user), Source::Workspace(w1)]),
            (
                mine,
                &[
                    Source::Creator(user),
                    Source::Workspace(w1),
                    Source::Workspace(w2),
                ],
            ),
        ];
        for (visibility, sources) in sources {
            for (name, narrow) in narrowing {
                let mut filter = ConversationFilter::visible(org, visibility);
                narrow(&mut filter);
                let plan: Vec<(i32, i32, i32, String)> = diesel::RunQueryDsl::load(
                    Explain(page_query!(&filter, sources, 50, 1000)),
                    &mut c,
                )
                .expect("explain");
                let steps: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
                let walks = steps
                    .iter()
                    .filter(|s| s.contains("USING COVERING INDEX conversations_"))
                    .count();
                let by_key = |s: &&&str| s.contains("conversations USING INDEX sqlite_autoindex");
                assert!(
                    walks == sources.len()
                        && !steps.iter().any(|s| s.contains("TEMP B-TREE"))
                        && steps
                            .iter()
                            .filter(|s| s.contains(" conversations ") && !by_key(s))
                            .all(|s| s.contains("COVERING INDEX")),
                    "{sources:?}, {name}: {steps:?}"
                );
            }
        }
    }
}
