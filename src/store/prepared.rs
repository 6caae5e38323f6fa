//! Statements diesel would parse and plan again every time, kept prepared.
//!
//! Diesel caches a statement as a prepared statement per connection only if
//! it cannot vary in ways the cache would not see. It never caches an
//! `UPDATE`, an upsert (`ON CONFLICT ... DO UPDATE`), or an insert that may
//! write `DEFAULT`, because a changeset of optional fields makes another SQL
//! text for every combination. On PostgreSQL an uncached statement costs a
//! round trip to prepare it and a plan each time it runs; on SQLite, a parse.
//!
//! [`Prepared`] declares a statement safe to cache. Its cache key is then its
//! SQL text (with the bind types), never its Rust type, so two texts are two
//! entries and nothing is ever run as another statement. Wrap only
//! statements whose text has few forms: every value bound, no changeset
//! whose optional fields vary per call, no batch of varying length.

use std::marker::PhantomData;

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};

/// A statement cached as a prepared statement, keyed by its SQL text.
#[derive(Debug, Clone, Copy)]
pub struct Prepared<Q>(pub Q);

impl<Q> QueryId for Prepared<Q> {
    type QueryId = ();
    // The key is the SQL text (see the module's note), never the type.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, DB> QueryFragment<DB> for Prepared<Q>
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

impl<Q, Conn> diesel::RunQueryDsl<Conn> for Prepared<Q> {}

/// Runs a write on a plain (synchronous) SQLite connection, SQLite's writer
/// thread's, keeping it prepared as the asynchronous connections do; returns
/// how many rows it wrote.
///
/// diesel's synchronous `execute` hands the connection a reference to the
/// statement, and a reference's `is_safe_to_cache_prepared` walks the
/// statement instead of asking it: a [`Prepared`] upsert would be parsed
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

/// A [`Prepared`] statement whose SQL text is the same on every call, found
/// in the connection's cache by the type `K` that names it rather than by
/// its text: diesel then never builds the text again once the statement is
/// prepared (building and hashing it took 15-20 % of SQLite's writer thread
/// in a turn). Name each statement with a type of its own (an empty enum),
/// used for nothing else, and key only a statement whose every
/// value is bound and whose text no value changes (no `Option` written as
/// `DEFAULT`, no optional changeset field, no batch): two texts under one
/// key would run one as the other. `keyed_statements_have_one_text` checks
/// the service's.
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
