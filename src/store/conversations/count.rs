//! How many conversations a list's filter matches, without counting rows
//! one by one (see [`count`]).

use chrono::{DateTime, Utc};
use diesel::backend::Backend;
use diesel::expression::{ValidGrouping, is_aggregate};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;

use super::{ConversationFilter, Visibility, administered, matching};
use crate::store::schema::{
    conversation_count_deltas, conversation_counts, conversation_day_counts,
    conversation_hour_counts,
};
use crate::store::types::SqlUuid;
use crate::store::{Conn, Store, StoreError};
use crate::with_conn;

/// How many conversations match in all, without counting rows one by one:
/// from `conversation_counts` (and the deltas not folded yet), narrowed by
/// visibility, creator, workspace and repository; with a time filter, from
/// `conversation_day_counts` for the whole days it covers,
/// `conversation_hour_counts` for the whole hours of its partial days, plus
/// the rows of the partial hours at its two ends (at most two hours' rows,
/// counted).
pub(super) async fn count(conn: &mut Conn, filter: &ConversationFilter) -> Result<i64, StoreError> {
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
    // at all), each table's summed in the database: a time filter's counts
    // are a few thousand rows (an hour or a day per creator, workspace and
    // repository), and carrying them out to add them up cost 2–3 ms.
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
            q.select((Total($t::live), Total($t::deleted)))
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

/// `CAST(COALESCE(SUM(column), 0) AS BIGINT)`: a column's sum over the
/// selected rows, 0 for none, a `BIGINT` on both backends (PostgreSQL's
/// `SUM` of one is a `NUMERIC`). Written as an expression rather than an
/// `sql()` literal, which diesel never keeps prepared: every total was
/// planned anew, about 0.5–1 ms on PostgreSQL.
#[derive(Debug, Clone, Copy, QueryId)]
struct Total<C>(C);

impl<C: Expression> Expression for Total<C> {
    type SqlType = BigInt;
}

impl<C: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for Total<C> {}

impl<C: SelectableExpression<QS>, QS> SelectableExpression<QS> for Total<C> {}

impl<C> ValidGrouping<()> for Total<C> {
    type IsAggregate = is_aggregate::Yes;
}

impl<C: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for Total<C> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("CAST(COALESCE(SUM(");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql("), 0) AS BIGINT)");
        Ok(())
    }
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
