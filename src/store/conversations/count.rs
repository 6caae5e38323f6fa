//! How many conversations a list's filter matches, without counting rows
//! one by one (see [`count`]).

use chrono::{DateTime, Utc};
use diesel::backend::Backend;
use diesel::dsl::count_star;
use diesel::expression::{ValidGrouping, is_aggregate};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;

use super::{ConversationFilter, Visibility, administered, matching};
use crate::store::schema::{
    conversation_count_deltas, conversation_counts, conversation_day_counts,
    conversation_hour_counts, conversation_slot_counts,
};
use crate::store::types::SqlUuid;
use crate::store::{Conn, Store, StoreError};
use crate::with_conn;

/// How many conversations match in all, without counting rows one by one,
/// in one statement (one snapshot: a fold between two reads would count its
/// deltas twice or not at all): the count tables' rows narrowed by
/// visibility, creator, workspace and repository, each table's summed in
/// the database, and the deltas not folded yet. With a time filter, its
/// whole finest units are summed from the daily, hourly and (on PostgreSQL)
/// ten-minute counts, from the unit boundaries nearest to its ends, added
/// or taken away ([`Plan`]), and only rows of the partial units at its two
/// ends are counted: those inside the filter, or, if that part is longer,
/// those outside it, taken from their unit's count (at most five minutes'
/// at each end on PostgreSQL, half an hour's on SQLite, whose indexes carry
/// every column those counts compare).
pub(super) async fn count(conn: &mut Conn, filter: &ConversationFilter) -> Result<i64, StoreError> {
    let units: &[i64] = match conn {
        Conn::Pg(_) => &[DAY, HOUR, SLOT],
        Conn::Sqlite(..) => &[DAY, HOUR],
    };
    let plan = if filter.id.is_some() {
        // At most one row, found by its key.
        None
    } else if filter.from.is_none() && filter.until.is_none() {
        Some(Plan::default())
    } else {
        Plan::new(filter.from, filter.until, units)
    };
    let Some(plan) = plan else {
        return Ok(with_conn!(&mut *conn, |c| {
            matching!(filter).count().get_result::<i64>(c).await
        })?);
    };
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
        ($t:ident, $column:ident, $span:expr) => {{
            let span: &Span = $span;
            let mut q = narrowed_counts!($t);
            if span.taken_away {
                q = q.select((Negative(Total($t::live)), Negative(Total($t::deleted))));
            }
            if let Some(a) = span.units.0 {
                q = q.filter($t::$column.ge(a));
            }
            if let Some(b) = span.units.1 {
                q = q.filter($t::$column.lt(b));
            }
            q
        }};
    }
    let parts = with_conn!(&mut *conn, |c| {
        let mut parts: Vec<Box<dyn QueryFragment<_> + Send>> = Vec::new();
        if plan.spans.is_empty() {
            parts.push(Box::new(narrowed_counts!(conversation_counts)));
        }
        for span in &plan.spans {
            parts.push(match span.unit {
                DAY => Box::new(narrowed_counts!(conversation_day_counts, day, span)),
                HOUR => Box::new(narrowed_counts!(conversation_hour_counts, hour, span)),
                _ => Box::new(narrowed_counts!(conversation_slot_counts, slot, span)),
            });
        }
        parts.push(Box::new(narrowed_counts!(
            conversation_count_deltas,
            slot,
            &plan.deltas()
        )));
        for edge in &plan.edges {
            let rows = ConversationFilter {
                from: Some(edge.from),
                until: Some(edge.until),
                ..filter.clone()
            };
            // Rows `matching!` admits, `showDeleted` included: all "live".
            let rows = matching!(&rows);
            let none = 0_i64.into_sql::<BigInt>();
            parts.push(if edge.taken_away {
                Box::new(rows.select((Negative(count_star()), none)))
            } else {
                Box::new(rows.select((count_star(), none)))
            });
        }
        Parts(parts).load::<(i64, i64)>(c).await
    })?;
    Ok(parts
        .iter()
        .map(|(live, deleted)| live + if filter.show_deleted { *deleted } else { 0 })
        .sum())
}

/// The count tables' units of time, in seconds: a day, an hour, ten
/// minutes (a slot; PostgreSQL only, see migration `count_slots`).
const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
const SLOT: i64 = 600;

/// How a total is made from the count tables. With a time filter, its
/// whole finest units are `covered`: at each end of the filter, the finest
/// unit it cuts is either left out and the filter's rows in it counted, or,
/// when the part of that unit outside the filter is shorter, taken in and
/// the rows of that part taken away (the `edges`, each at most half a finest
/// unit). `covered` is summed from the count tables as `spans` (see
/// [`split`]): whole units of the coarsest table from the unit boundary
/// nearest to each of its ends, and each end's difference from the next
/// finer table the same way, added or taken away, so each table is read in
/// at most two ranges of its key, and each end in at most half as many
/// units of a table as make one unit of the next coarser one. Without a
/// time filter, `conversation_counts` holds everything (no spans).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Plan {
    covered: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    spans: Vec<Span>,
    edges: Vec<Edge>,
}

/// A range of one count table's units, added to the total or taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// Seconds per unit: [`DAY`], [`HOUR`] or [`SLOT`].
    unit: i64,
    /// `units.0..units.1`, since the Unix epoch (either end open).
    units: (Option<i64>, Option<i64>),
    taken_away: bool,
}

/// Rows created in `from..until`, part of one finest unit at an end of a
/// time filter: counted, or (`taken_away`) subtracted from their unit's
/// count, which `covered` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Edge {
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    taken_away: bool,
}

impl Plan {
    /// The plan of a time filter `from..until` (either end open, not both)
    /// for count tables of `units` (coarsest first), or `None` when it holds
    /// no whole unit of the finest (its rows are counted).
    fn new(
        from: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        units: &[i64],
    ) -> Option<Plan> {
        let finest = *units.last()?;
        if !holds_a_whole(from, until, finest) {
            return None;
        }
        // Each end: the finest unit it cuts, and which of its parts (inside
        // the filter or outside) has fewer seconds, so fewer rows to count.
        let mut edges = Vec::new();
        let mut cut = |t: Option<DateTime<Utc>>, head: bool| {
            let t = t?;
            let u = t.timestamp().div_euclid(finest);
            let (lo, hi) = (start(u, finest), start(u + 1, finest));
            if lo == t {
                return Some(t);
            }
            let (inside, outside) = if head {
                (hi - t, t - lo)
            } else {
                (t - lo, hi - t)
            };
            let taken_away = outside < inside;
            // The part before `t` (kept from `lo`) or after it (to `hi`).
            let (from, until, kept) = if head == taken_away {
                (lo, t, lo)
            } else {
                (t, hi, hi)
            };
            edges.push(Edge {
                from,
                until,
                taken_away,
            });
            Some(kept)
        };
        let covered = (cut(from, true), cut(until, false));
        let mut spans: Vec<Span> = Vec::new();
        let seconds = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp());
        split(
            seconds(covered.0),
            seconds(covered.1),
            false,
            units,
            &mut spans,
        );
        Some(Plan {
            covered,
            spans,
            edges,
        })
    }

    /// The slots of the deltas not folded yet that `covered` holds.
    fn deltas(&self) -> Span {
        let slot = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp().div_euclid(SLOT));
        Span {
            unit: SLOT,
            units: (slot(self.covered.0), slot(self.covered.1)),
            taken_away: false,
        }
    }
}

/// Adds to `spans` ranges of units of the count tables of `units` (coarsest
/// first) that sum to the seconds `a..b` (either end open; both multiples of
/// the finest unit), or take them away (`taken_away`): the coarsest table's
/// units between the unit boundaries nearest to `a` and to `b`, and what
/// lies between each end and its nearest boundary from the finer tables the
/// same way, added (the range fell short of the end) or taken away (it went
/// past it). A range with no unit of a table between those boundaries goes
/// whole to the finer tables.
fn split(a: Option<i64>, b: Option<i64>, taken_away: bool, units: &[i64], spans: &mut Vec<Span>) {
    let Some((&unit, finer)) = units.split_first() else {
        return;
    };
    if finer.is_empty() {
        // The finest unit: both ends are on its boundaries.
        spans.push(Span {
            unit,
            units: (a.map(|a| a / unit), b.map(|b| b / unit)),
            taken_away,
        });
        return;
    }
    // The unit boundary nearest to `t`, in units (a tie rounds up).
    let nearest = |t: i64| (t + unit / 2).div_euclid(unit);
    let (first, end) = (a.map(nearest), b.map(nearest));
    if matches!((first, end), (Some(f), Some(e)) if f >= e) {
        split(a, b, taken_away, finer, spans);
        return;
    }
    spans.push(Span {
        unit,
        units: (first, end),
        taken_away,
    });
    // Each end's gap to its boundary: added where the span fell short of
    // the end, taken away where it went past it.
    for (t, boundary, head) in [(a, first, true), (b, end, false)] {
        if let (Some(t), Some(boundary)) = (t, boundary.map(|u| u * unit))
            && t != boundary
        {
            let past = if head { boundary < t } else { boundary > t };
            let gap = (Some(t.min(boundary)), Some(t.max(boundary)));
            split(gap.0, gap.1, taken_away != past, finer, spans);
        }
    }
}

/// Whether `from..until` (either end open) holds a whole unit of `unit`
/// seconds.
fn holds_a_whole(from: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>, unit: i64) -> bool {
    let first = from.map(|t| {
        let u = t.timestamp().div_euclid(unit);
        if start(u, unit) == t { u } else { u + 1 }
    });
    let end = until.map(|t| t.timestamp().div_euclid(unit));
    !matches!((first, end), (Some(a), Some(b)) if a >= b)
}

/// When unit `u` of `unit` seconds (since the Unix epoch) starts.
fn start(u: i64, unit: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(u.saturating_mul(unit), 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A total's parts in one statement: `part₀ UNION ALL part₁ …`, each a
/// `(live, deleted)` pair of sums (a count table's, the deltas', or rows
/// counted).
struct Parts<Q>(Vec<Q>);

impl<Q> Query for Parts<Q> {
    type SqlType = (BigInt, BigInt);
}

impl<Q> QueryId for Parts<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: Backend, Q: QueryFragment<DB>> QueryFragment<DB> for Parts<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_sql(" UNION ALL ");
            }
            part.walk_ast(out.reborrow())?;
        }
        Ok(())
    }
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

/// `(-expression)`: counts or rows taken away from a total.
#[derive(Debug, Clone, Copy, QueryId)]
struct Negative<E>(E);

impl<E: Expression> Expression for Negative<E> {
    type SqlType = E::SqlType;
}

impl<E: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for Negative<E> {}

impl<E: SelectableExpression<QS>, QS> SelectableExpression<QS> for Negative<E> {}

impl<E: ValidGrouping<()>> ValidGrouping<()> for Negative<E> {
    type IsAggregate = E::IsAggregate;
}

impl<E: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for Negative<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("(-");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(")");
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

    /// How many times a plan counts second `t` (since the Unix epoch): in
    /// a span's units, and in an edge's rows (counted, or taken away).
    fn times_counted(plan: &Plan, t: i64) -> i64 {
        let inside = |(a, b): (Option<i64>, Option<i64>), x: i64| {
            a.is_none_or(|a| x >= a) && b.is_none_or(|b| x < b)
        };
        let edges: i64 = plan
            .edges
            .iter()
            .filter(|e| inside((Some(e.from.timestamp()), Some(e.until.timestamp())), t))
            .map(|e| if e.taken_away { -1 } else { 1 })
            .sum();
        let spans: i64 = plan
            .spans
            .iter()
            .filter(|span| inside(span.units, t.div_euclid(span.unit)))
            .map(|span| if span.taken_away { -1 } else { 1 })
            .sum();
        edges + spans
    }

    /// Every second of a time filter is counted once in all (the spans and
    /// edges added, less those taken away), and none outside it; each table
    /// is read in at most two ranges of its key, each end in at most half as
    /// many units as make one of the next coarser table; the rows at each
    /// end are at most half a finest unit's.
    #[test]
    fn a_plan_counts_every_second_once() {
        let day = DAY;
        let cases = [
            (
                Some(30 * HOUR + 17 * 60 + 5),
                Some(100 * HOUR + 17 * 60 + 5),
            ),
            (Some(30 * HOUR + 11 * 60), Some(100 * HOUR + 59 * 60 + 1)),
            (Some(47 * HOUR + 50 * 60 + 20), Some(96 * HOUR + 9 * 60)),
            (Some(day), Some(2 * day)),
            (Some(25 * HOUR), Some(47 * HOUR)),
            (Some(0), Some(day)),
            (Some(-30 * HOUR - 1), Some(5 * HOUR + 7)),
            (None, Some(50 * HOUR + 599)),
            (Some(50 * HOUR + 1), None),
            (Some(47 * HOUR - 1), Some(49 * HOUR + 1)),
            (Some(8 * day + 17 * 60), Some(9 * day + 17 * 60)),
            (Some(3 * SLOT + 1), Some(4 * SLOT - 1)),
            (Some(3 * SLOT), Some(4 * SLOT)),
            (Some(3 * SLOT + 300), Some(5 * SLOT + 300)),
        ];
        for units in [&[DAY, HOUR, SLOT][..], &[DAY, HOUR][..]] {
            let finest = units[units.len() - 1];
            for (from, until) in cases {
                let at = |s: Option<i64>| s.map(|s| start(s, 1));
                let lo = from.unwrap_or(-3 * day);
                let hi = until.unwrap_or(12 * day);
                let Some(plan) = Plan::new(at(from), at(until), units) else {
                    // No whole finest unit: rows only.
                    assert!(hi - lo < 2 * finest, "{from:?}..{until:?} {units:?}");
                    continue;
                };
                for t in (lo - 2 * day)..(hi + 2 * day) {
                    let want =
                        i64::from(from.is_none_or(|a| t >= a) && until.is_none_or(|b| t < b));
                    let got = times_counted(&plan, t);
                    assert_eq!(
                        got, want,
                        "{from:?}..{until:?} {units:?}, second {t}: {plan:?}"
                    );
                }
                for (i, unit) in units.iter().enumerate() {
                    let spans: Vec<&Span> = plan.spans.iter().filter(|s| s.unit == *unit).collect();
                    assert!(spans.len() <= 2, "{from:?}..{until:?}: {plan:?}");
                    if i == 0 {
                        continue;
                    }
                    // A finer table's range is an end's difference.
                    let most = units[i - 1] / unit / 2;
                    for span in spans {
                        if let (Some(a), Some(b)) = span.units {
                            assert!(
                                b - a <= most || spans_of_coarser(&plan, units, i) == 0,
                                "{from:?}..{until:?} {units:?}: {span:?} in {plan:?}"
                            );
                        }
                    }
                }
                assert!(plan.edges.len() <= 2, "{from:?}..{until:?}: {plan:?}");
                for e in &plan.edges {
                    let secs = (e.until - e.from).num_seconds();
                    assert!(
                        0 < secs && 2 * secs <= finest,
                        "{from:?}..{until:?}: an edge of {secs} s"
                    );
                }
            }
        }
    }

    /// How many spans a plan has of the tables coarser than `units[i]`.
    fn spans_of_coarser(plan: &Plan, units: &[i64], i: usize) -> usize {
        plan.spans
            .iter()
            .filter(|s| units[..i].contains(&s.unit))
            .count()
    }

    /// The one-day window the list benchmark reads (a week back, 17 minutes
    /// past the hour): its day, less 5 hours and 2 slots before its start,
    /// plus 5 hours and 2 slots of the next day (1,500 count rows in the
    /// bench, where the whole hours alone were 2,300); and under six minutes
    /// of rows: 177 s inside it at its start, and at its end the 177 s after
    /// it, taken away from their slot.
    #[test]
    fn a_day_a_week_back() {
        let from = start(20_000 * DAY + 5 * HOUR + 17 * 60 + 3, 1);
        let until = from + chrono::TimeDelta::days(1);
        let plan = Plan::new(Some(from), Some(until), &[DAY, HOUR, SLOT]).expect("whole slots");
        let spans: Vec<(i64, i64, bool)> = plan
            .spans
            .iter()
            .map(|s| {
                let (a, b) = (s.units.0.expect("a start"), s.units.1.expect("an end"));
                (s.unit, b - a, s.taken_away)
            })
            .collect();
        assert_eq!(
            spans,
            [
                (DAY, 1, false),
                (HOUR, 5, true),
                (SLOT, 2, true),
                (HOUR, 5, false),
                (SLOT, 2, false)
            ]
        );
        let edges: Vec<(i64, bool)> = plan
            .edges
            .iter()
            .map(|e| ((e.until - e.from).num_seconds(), e.taken_away))
            .collect();
        assert_eq!(edges, [(177, false), (177, true)]);
    }
}
