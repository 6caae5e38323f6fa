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

use super::{ConversationFilter, ConversationRow, Visibility, administered, bounded, matching};
use crate::store::schema::{
    conversation_count_deltas, conversation_counts, conversation_day_counts,
    conversation_hour_counts, conversations, repos, users,
};
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

/// How many conversations match in all, without counting rows one by one:
/// from `conversation_counts` (and the deltas not folded yet), narrowed by
/// visibility, creator, workspace and repository; with a time filter, from
/// `conversation_day_counts` for the whole days it covers,
/// `conversation_hour_counts` for the whole hours of its partial days, plus
/// the rows of the partial hours at its two ends (at most two hours' rows,
/// counted).
async fn count(conn: &mut Conn, filter: &ConversationFilter) -> Result<i64, StoreError> {
    if filter.id.is_some() {
        // At most one row, found by its key.
        return counted(conn, filter).await;
    }
    if filter.from.is_none() && filter.until.is_none() {
        return summed(conn, filter, None).await;
    }
    // The whole hours inside the filter: `first..end` (hours since the epoch).
    let first = filter.from.map(|t| {
        let h = hour_of(t);
        if hour_start(h) == t { h } else { h + 1 }
    });
    let end = filter.until.map(hour_of);
    if let (Some(a), Some(b)) = (first, end)
        && a >= b
    {
        // Less than two hours: its rows are the edges.
        return counted(conn, filter).await;
    }
    let mut total = summed(conn, filter, Some(Span::new(first, end))).await?;
    if let (Some(from), Some(a)) = (filter.from, first)
        && hour_start(a) != from
    {
        let edge = ConversationFilter {
            until: Some(hour_start(a)),
            ..filter.clone()
        };
        total += counted(conn, &edge).await?;
    }
    if let (Some(until), Some(b)) = (filter.until, end)
        && hour_start(b) != until
    {
        let edge = ConversationFilter {
            from: Some(hour_start(b)),
            ..filter.clone()
        };
        total += counted(conn, &edge).await?;
    }
    Ok(total)
}

/// The whole hours `first..end` of a time filter (either end open), as whole
/// days `days.0..days.1` and the hours outside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    first: Option<i64>,
    end: Option<i64>,
    days: (Option<i64>, Option<i64>),
}

impl Span {
    fn new(first: Option<i64>, end: Option<i64>) -> Self {
        // The first whole day at or after `first`, the day `end` falls in.
        let days = (
            first.map(|h| h.div_euclid(24) + i64::from(h.rem_euclid(24) != 0)),
            end.map(|h| h.div_euclid(24)),
        );
        let days = match days {
            (Some(a), Some(b)) if a >= b => (Some(0), Some(0)),
            days => days,
        };
        Span { first, end, days }
    }

    /// Whether hour `h` of the span is inside its whole days.
    #[cfg(test)]
    fn in_days(&self, h: i64) -> bool {
        let d = h.div_euclid(24);
        self.days.0.is_none_or(|a| d >= a) && self.days.1.is_none_or(|b| d < b)
    }
}

/// The hour (since the Unix epoch) a time falls in, as the counts' triggers
/// compute it.
fn hour_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(3600)
}

/// When hour `h` (since the Unix epoch) starts.
fn hour_start(h: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(h.saturating_mul(3600), 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The matching rows, counted (for a narrow range only).
async fn counted(conn: &mut Conn, filter: &ConversationFilter) -> Result<i64, StoreError> {
    Ok(with_conn!(&mut *conn, |c| {
        matching!(filter).count().get_result::<i64>(c).await
    })?)
}

/// The counts matching the filter's visibility, creator, workspace and
/// repository: all of them, or those of a time filter's whole hours (whole
/// days from the day counts, the other hours from the hour counts).
async fn summed(
    conn: &mut Conn,
    filter: &ConversationFilter,
    span: Option<Span>,
) -> Result<i64, StoreError> {
    // The folded counts and the deltas not folded yet, in one statement (one
    // snapshot: a fold between two reads would count its rows twice or not
    // at all).
    macro_rules! narrowed_counts {
        ($t:ident) => {{
            let mut q = $t::table
                .filter($t::org_id.eq(SqlUuid(filter.org_id)))
                .into_boxed();
            if let Visibility::OwnAndAdministered { user_id } = filter.visibility {
                q = q.filter(
                    $t::created_by
                        .eq(SqlUuid(user_id))
                        .or($t::workspace_id.eq_any(administered!(user_id))),
                );
            }
            if let Some(u) = filter.created_by {
                q = q.filter($t::created_by.eq(SqlUuid(u)));
            }
            if let Some(w) = filter.workspace_id {
                q = q.filter($t::workspace_id.eq(SqlUuid(w)));
            }
            if let Some(r) = filter.repo_id {
                q = q.filter($t::repo_id.eq(SqlUuid(r)));
            }
            q.select(($t::live, $t::deleted))
        }};
        ($t:ident, $column:ident, $range:expr) => {{
            let mut q = narrowed_counts!($t);
            let (a, b): (Option<i64>, Option<i64>) = $range;
            if let Some(a) = a {
                q = q.filter($t::$column.ge(a));
            }
            if let Some(b) = b {
                q = q.filter($t::$column.lt(b));
            }
            q
        }};
    }
    let counts = with_conn!(&mut *conn, |c| {
        match span {
            None => {
                narrowed_counts!(conversation_counts)
                    .union_all(narrowed_counts!(conversation_count_deltas))
                    .load::<(i64, i64)>(c)
                    .await
            }
            Some(span) => {
                // The hours of the span outside its whole days.
                let (a, b) = span.days;
                let hours =
                    narrowed_counts!(conversation_hour_counts, hour, (span.first, span.end))
                        .filter(
                            conversation_hour_counts::hour
                                .lt(a.map_or(i64::MIN, |a| a * 24))
                                .or(conversation_hour_counts::hour
                                    .ge(b.map_or(i64::MAX, |b| b * 24))),
                        );
                narrowed_counts!(conversation_day_counts, day, span.days)
                    .union_all(hours)
                    .union_all(narrowed_counts!(
                        conversation_count_deltas,
                        hour,
                        (span.first, span.end)
                    ))
                    .load::<(i64, i64)>(c)
                    .await
            }
        }
    })?;
    Ok(counts
        .iter()
        .map(|(live, deleted)| live + if filter.show_deleted { *deleted } else { 0 })
        .sum())
}

impl Store {
    /// Folds the count deltas creates and deletes appended into
    /// `conversation_counts` (PostgreSQL; SQLite's triggers update the
    /// counts in place); returns how many deltas it moved.
    pub async fn fold_counts(&self) -> Result<i64, StoreError> {
        #[derive(QueryableByName)]
        struct Folded {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        self.run(|conn| {
            async move {
                let Conn::Pg(c) = conn else {
                    return Ok(0);
                };
                let folded: Folded = diesel::sql_query("SELECT fold_conversation_counts() AS n")
                    .get_result(&mut **c)
                    .await?;
                Ok(folded.n)
            }
            .boxed()
        })
        .await
    }
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

    /// Every hour of a span is counted once: from the day counts when its
    /// day is whole in the span, else from the hour counts.
    #[test]
    fn a_span_splits_into_whole_days_and_hours() {
        let cases = [
            (Some(30), Some(100)),
            (Some(24), Some(48)),
            (Some(25), Some(47)),
            (Some(0), Some(24)),
            (Some(-30), Some(5)),
            (None, Some(50)),
            (Some(50), None),
            (Some(47), Some(49)),
        ];
        for (first, end) in cases {
            let span = Span::new(first, end);
            let (a, b) = span.days;
            let lo = first.unwrap_or(-200);
            let hi = end.unwrap_or(300);
            for h in lo..hi {
                // As `summed` filters the hour counts.
                let from_hours =
                    h < a.map_or(i64::MIN, |a| a * 24) || h >= b.map_or(i64::MAX, |b| b * 24);
                assert!(
                    span.in_days(h) != from_hours,
                    "{first:?}..{end:?}: hour {h} counted twice or never ({span:?})"
                );
            }
            // A whole day is inside the span.
            if let (Some(a), Some(b)) = (a, b) {
                assert!(a <= b);
                if a < b {
                    assert!(first.is_none_or(|f| a * 24 >= f) && end.is_none_or(|e| b * 24 <= e));
                }
            }
        }
    }
}
