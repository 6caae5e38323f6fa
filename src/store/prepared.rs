//! Statements diesel would parse and plan again every time, kept prepared.
//!
//! Diesel caches a statement as a prepared statement per connection only if
//! it cannot vary in ways the cache would not see. It never caches an
//! `UPDATE`, an upsert (`ON CONFLICT ... DO UPDATE`), or an insert that may
//! write `DEFAULT`, because a changeset of optional fields makes another SQL
//! text for every combination. On PostgreSQL an uncached statement costs a
//! round trip to prepare it and a plan each time it runs; on SQLite, a parse.
//!
//! [`Keyed`] declares a statement safe to cache, under a key of its own: an
//! empty enum that names that one statement, used for nothing else. Diesel
//! then finds it in the connection's cache by that type, without building
//! and hashing its SQL text each time (which took 15-20 % of SQLite's writer
//! thread in a turn). Key only a statement whose text is one and the same
//! on every call: every value bound, no `Option` written as `DEFAULT`, no
//! changeset whose optional fields vary, no batch of varying length; two
//! texts under one key would run one as the other.
//! `keyed_statements_have_one_text` and `the_totals_update_has_one_text`
//! check the service's.

use std::marker::PhantomData;

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};

/// A statement cached as a prepared statement under the key type `K`.
pub struct Keyed<K, Q>(Q, PhantomData<fn() -> K>);

impl<K, Q> Keyed<K, Q> {
    pub fn new(statement: Q) -> Self {
        Keyed(statement, PhantomData)
    }
}

impl<K: 'static, Q> QueryId for Keyed<K, Q> {
    type QueryId = K;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<K, Q: Query> Query for Keyed<K, Q> {
    type SqlType = Q::SqlType;
}

impl<K, Q, DB> QueryFragment<DB> for Keyed<K, Q>
where
    DB: Backend,
    Q: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<K, Q, Conn> diesel::RunQueryDsl<Conn> for Keyed<K, Q> {}

/// Runs a write on a plain (synchronous) SQLite connection, SQLite's writer
/// thread's, keeping it prepared as the asynchronous connections do; returns
/// how many rows it wrote.
///
/// diesel's synchronous `execute` hands the connection a reference to the
/// statement, and a reference's `is_safe_to_cache_prepared` walks the
/// statement instead of asking it: a [`Keyed`] upsert would be parsed
/// anew every time (`turn_statements_are_prepared_once` saw it). A load
/// hands the statement over itself, so the write runs as one, with
/// `RETURNING 1` (a row per row written).
pub fn execute_on_sqlite<Q>(statement: Q, c: &mut diesel::SqliteConnection) -> QueryResult<usize>
where
    Q: QueryFragment<diesel::sqlite::Sqlite> + QueryId,
{
    let written: Vec<i32> = diesel::RunQueryDsl::load(Counted(statement), c)?;
    Ok(written.len())
}

/// A write with `RETURNING 1`, to be run as a load (see [`execute_on_sqlite`]).
struct Counted<Q>(Q);

impl<Q: QueryId> QueryId for Counted<Q> {
    type QueryId = Counted<Q::QueryId>;
    const HAS_STATIC_QUERY_ID: bool = Q::HAS_STATIC_QUERY_ID;
}

impl<Q> Query for Counted<Q> {
    type SqlType = diesel::sql_types::Integer;
}

impl<Q> QueryFragment<diesel::sqlite::Sqlite> for Counted<Q>
where
    Q: QueryFragment<diesel::sqlite::Sqlite>,
{
    fn walk_ast<'b>(
        &'b self,
        mut pass: AstPass<'_, 'b, diesel::sqlite::Sqlite>,
    ) -> QueryResult<()> {
        self.0.walk_ast(pass.reborrow())?;
        pass.push_sql(" RETURNING 1");
        Ok(())
    }

    fn is_safe_to_cache_prepared(&self, backend: &diesel::sqlite::Sqlite) -> QueryResult<bool> {
        self.0.is_safe_to_cache_prepared(backend)
    }
}

impl<Q> diesel::RunQueryDsl<diesel::SqliteConnection> for Counted<Q> {}

/// The SQL text of a statement on backend `DB`, without its bound values.
#[cfg(test)]
pub(crate) fn sql_text<DB, Q>(statement: &Q) -> String
where
    DB: Backend + Default,
    DB::QueryBuilder: Default,
    Q: QueryFragment<DB>,
{
    use diesel::query_builder::QueryBuilder as _;
    let mut builder = DB::QueryBuilder::default();
    statement
        .to_sql(&mut builder, &DB::default())
        .expect("the statement's SQL");
    builder.finish()
}
