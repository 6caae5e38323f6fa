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
