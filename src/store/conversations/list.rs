//! Listing conversations (newest first) and getting one.
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

use super::{ConversationFilter, ConversationRow, Visibility, administered, matching, narrowed};
use crate::store::schema::{
    conversation_count_deltas, conversation_counts, conversation_hour_counts, conversations, repos,
    users,
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
                let window = skip.saturating_add(take);
                let mut rows: Vec<ConversationRow> = Vec::new();
                for source in sources(conn, &filter).await? {
                    rows.extend(newest(conn, &filter, source, window).await?);
                }
                rows.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
                rows.dedup_by_key(|r| r.id);
                let skip_rows = usize::try_from(skip).unwrap_or(usize::MAX);
                let take_rows = usize::try_from(take).unwrap_or(usize::MAX);
                let page: Vec<ConversationRow> =
                    rows.into_iter().skip(skip_rows).take(take_rows).collect();
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

    /// One conversation, if it matches the filter.
    pub async fn get_conversation(
        &self,
        filter: ConversationFilter,
    ) -> Result<Option<ConversationRow>, StoreError> {
        self.read(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| {
                    matching!(&filter)
                        .inner_join(repos::table)
                        .inner_join(users::table)
                        .select(ConversationRow::as_select())
                        .first(c)
                        .await
                        .optional()
                })?)
            }
            .boxed()
        })
        .await
    }
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

/// The newest `window` rows of one source that match the filter.
async fn newest(
    conn: &mut Conn,
    filter: &ConversationFilter,
    source: Source,
    window: i64,
) -> Result<Vec<ConversationRow>, StoreError> {
    Ok(with_conn!(&mut *conn, |c| {
        let q = narrowed!(filter);
        let q = match source {
            Source::Organization => q,
            Source::Creator(u) => q.filter(conversations::created_by.eq(SqlUuid(u))),
            Source::Workspace(w) => q.filter(conversations::workspace_id.eq(SqlUuid(w))),
        };
        q.inner_join(repos::table)
            .inner_join(users::table)
            .select(ConversationRow::as_select())
            .order((conversations::created_at.desc(), conversations::id.desc()))
            .limit(window)
            .load(c)
            .await
    })?)
}

/// How many conversations match in all, without counting rows one by one:
/// from `conversation_counts` (and the deltas not folded yet), narrowed by
/// visibility, creator, workspace and repository; with a time filter, from
/// `conversation_hour_counts` for the whole hours it covers, plus the rows of
/// the partial hours at its ends (at most two hours' rows, counted).
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
    let mut total = summed(conn, filter, Some((first, end))).await?;
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
/// repository: all of them, or those of the hours `first..end`.
async fn summed(
    conn: &mut Conn,
    filter: &ConversationFilter,
    hours: Option<(Option<i64>, Option<i64>)>,
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
            q
        }};
        ($t:ident, $first:expr, $end:expr) => {{
            let mut q = narrowed_counts!($t);
            if let Some(a) = $first {
                q = q.filter($t::hour.ge(a));
            }
            if let Some(b) = $end {
                q = q.filter($t::hour.lt(b));
            }
            q
        }};
    }
    let counts = with_conn!(&mut *conn, |c| {
        match hours {
            None => {
                narrowed_counts!(conversation_counts)
                    .select((conversation_counts::live, conversation_counts::deleted))
                    .union_all(narrowed_counts!(conversation_count_deltas).select((
                        conversation_count_deltas::live,
                        conversation_count_deltas::deleted,
                    )))
                    .load::<(i64, i64)>(c)
                    .await
            }
            Some((first, end)) => {
                narrowed_counts!(conversation_hour_counts, first, end)
                    .select((
                        conversation_hour_counts::live,
                        conversation_hour_counts::deleted,
                    ))
                    .union_all(
                        narrowed_counts!(conversation_count_deltas, first, end).select((
                            conversation_count_deltas::live,
                            conversation_count_deltas::deleted,
                        )),
                    )
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
