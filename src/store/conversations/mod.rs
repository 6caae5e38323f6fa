//! The conversations: the rows a create writes, the filters a list, a get
//! or a delete applies (with the caller's visibility), and one module per
//! action.
//!
//! The filter macros build a boxed query for the backend of the
//! surrounding `with_conn!` arm: a boxed query's type depends on the
//! backend, and a function generic over it drowns in trait bounds.

mod count;
mod create;
mod delete;
mod get;
mod list;

pub use create::{Created, Creator, KeyFor, NewCreate, RULES, Refusal, Rule};
pub use get::{Holder, HolderAndConversation};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{conversations, repos, system_events, users};
use super::types::{SqlJson, SqlTime, SqlUuid};

// The rows a create inserts are derived with `treat_none_as_default_value =
// false`: every field is then a bound parameter (None binds NULL). diesel's
// default wraps each field in an `Option` that may print `DEFAULT`, which
// makes the INSERT's SQL depend on the row, so diesel prepares it anew every
// time instead of once per connection: on PostgreSQL a parse, a plan and a
// round trip more per INSERT (found by profiling; it cost creates a fifth of
// their throughput). `create::statements_are_prepared_once` checks it.

/// A row of `conversations` to insert.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = conversations, treat_none_as_default_value = false)]
pub struct NewConversation {
    pub id: SqlUuid,
    pub org_id: SqlUuid,
    pub workspace_id: SqlUuid,
    pub repo_id: SqlUuid,
    pub created_by: SqlUuid,
    pub title: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub created_at: SqlTime,
    pub last_updated_at: SqlTime,
}

/// A row of `system_events` to insert.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = system_events, treat_none_as_default_value = false)]
pub struct NewEvent {
    pub id: SqlUuid,
    pub org_id: SqlUuid,
    pub workspace_id: Option<SqlUuid>,
    pub user_id: Option<SqlUuid>,
    pub context: String,
    pub context_id: Option<SqlUuid>,
    pub event: String,
    pub json_data: Option<SqlJson>,
    pub created_at: SqlTime,
}

/// Whose conversations a caller sees.
#[derive(Debug, Clone, Copy)]
pub enum Visibility {
    /// Organization administrators and owners: the whole organization.
    Organization,
    /// Everyone else: their own, plus all of the workspaces they administer.
    OwnAndAdministered { user_id: Uuid },
}

/// Which conversations a list (or a get) is about. Every field narrows.
#[derive(Debug, Clone)]
pub struct ConversationFilter {
    pub org_id: Uuid,
    pub visibility: Visibility,
    pub id: Option<Uuid>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created strictly before.
    pub until: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub repo_id: Option<Uuid>,
    pub show_deleted: bool,
}

impl ConversationFilter {
    /// Everything `visibility` lets a caller of `org_id` see, not yet narrowed.
    pub fn visible(org_id: Uuid, visibility: Visibility) -> Self {
        Self {
            org_id,
            visibility,
            id: None,
            from: None,
            until: None,
            created_by: None,
            workspace_id: None,
            repo_id: None,
            show_deleted: false,
        }
    }

    /// Whether `row` matches, judged here instead of in SQL (for a row read
    /// with what a prompt needs at once, before the caller was known):
    /// exactly what [`matching!`] asks of the database. `access` is the
    /// visibility's user's access to the row's workspace, if any.
    pub fn admits(&self, row: &ConversationRow, access: Option<crate::domain::Access>) -> bool {
        let narrowed = row.org_id == self.org_id
            && self.id.is_none_or(|id| row.id == id)
            && self.from.is_none_or(|t| row.created_at >= t)
            && self.until.is_none_or(|t| row.created_at < t)
            && (self.show_deleted || row.deleted_at.is_none())
            && self.created_by.is_none_or(|u| row.created_by == u)
            && self.workspace_id.is_none_or(|w| row.workspace_id == w)
            && self.repo_id.is_none_or(|r| row.repo_id == r);
        narrowed
            && match self.visibility {
                Visibility::Organization => true,
                Visibility::OwnAndAdministered { user_id } => {
                    row.created_by == user_id || access == Some(crate::domain::Access::Admin)
                }
            }
    }
}

/// A conversation with its repository's name and its creator, as listed
/// (joined with `repos` and `users`). Serialized: it is the reply an
/// idempotency key replays.
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = conversations, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct ConversationRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub repo_id: Uuid,
    pub created_by: Uuid,
    pub title: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub created_at: DateTime<Utc>,
    pub last_updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    #[diesel(select_expression = repos::name)]
    pub repo_name: String,
    #[diesel(select_expression = users::name)]
    pub creator_name: Option<String>,
    #[diesel(select_expression = users::last_name)]
    pub creator_last_name: Option<String>,
    #[diesel(select_expression = users::email)]
    pub creator_email: String,
}

/// The conversations matching a filter's narrowing fields (not its
/// visibility), as a boxed query for the backend the surrounding `with_conn!`
/// arm runs on, without joins or selection.
macro_rules! narrowed {
    ($f:expr) => {{
        use $crate::store::conversations::ConversationFilter;
        use $crate::store::schema::conversations;
        use $crate::store::types::SqlUuid;
        let f: &ConversationFilter = $f;
        let mut q = conversations::table
            .filter(conversations::org_id.eq(SqlUuid(f.org_id)))
            .into_boxed();
        q = $crate::store::conversations::bounded!(q, f);
        if let Some(u) = f.created_by {
            q = q.filter(conversations::created_by.eq(SqlUuid(u)));
        }
        if let Some(w) = f.workspace_id {
            q = q.filter(conversations::workspace_id.eq(SqlUuid(w)));
        }
        if let Some(r) = f.repo_id {
            q = q.filter(conversations::repo_id.eq(SqlUuid(r)));
        }
        q
    }};
}

/// A boxed query of conversations narrowed by a filter's id, time bounds and
/// `showDeleted` (the filters no index walk is chosen by).
macro_rules! bounded {
    ($q:expr, $f:expr) => {{
        use $crate::store::schema::conversations;
        use $crate::store::types::{SqlTime, SqlUuid};
        let f: &$crate::store::conversations::ConversationFilter = $f;
        let mut q = $q;
        if let Some(id) = f.id {
            q = q.filter(conversations::id.eq(SqlUuid(id)));
        }
        if let Some(t) = f.from {
            q = q.filter(conversations::created_at.ge(SqlTime(t)));
        }
        if let Some(t) = f.until {
            q = q.filter(conversations::created_at.lt(SqlTime(t)));
        }
        if !f.show_deleted {
            q = q.filter(conversations::deleted_at.is_null());
        }
        q
    }};
}

/// The conversations a filter matches, visibility included (a boxed query,
/// as [`narrowed`]). [`ConversationFilter::admits`] is its twin in Rust:
/// the two change together.
macro_rules! matching {
    ($f:expr) => {{
        use $crate::store::conversations::{ConversationFilter, Visibility};
        use $crate::store::schema::conversations;
        use $crate::store::types::SqlUuid;
        let f: &ConversationFilter = $f;
        let mut q = $crate::store::conversations::narrowed!(f);
        if let Visibility::OwnAndAdministered { user_id } = f.visibility {
            q = q.filter(
                conversations::created_by
                    .eq(SqlUuid(user_id))
                    .or(conversations::workspace_id
                        .eq_any($crate::store::conversations::administered!(user_id))),
            );
        }
        q
    }};
}

/// The workspaces a user administers, as a subquery.
macro_rules! administered {
    ($user_id:expr) => {{
        use $crate::store::schema::workspace_members;
        workspace_members::table
            .filter(workspace_members::user_id.eq($crate::store::types::SqlUuid($user_id)))
            .filter(workspace_members::access.eq($crate::domain::Access::Admin.as_str()))
            .select(workspace_members::workspace_id)
    }};
}

pub(crate) use {administered, bounded, matching, narrowed};
