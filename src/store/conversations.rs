//! The queries behind the conversation rpcs: who holds a token, what a caller
//! may do with a repository, and writing a conversation with its audit event.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::schema::{
    api_tokens, conversation_counts, conversations, idempotency_keys, repos, system_events, users,
    workspace_members, workspaces,
};
use super::types::{SqlJson, SqlTime, SqlUuid};
use super::{Conn, Store, StoreError};
use crate::domain::{Access, OrgRole};
use crate::{with_conn, write_tx};
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection as _};

/// A user as found by id (a JWT's subject) or with their token.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct UserRow {
    #[diesel(column_name = id)]
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub last_name: Option<String>,
    pub org_role: OrgRole,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// An API token and the user it belongs to, as found by the token's hash.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_tokens, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct TokenOwner {
    #[diesel(column_name = id)]
    pub token_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    #[diesel(embed)]
    pub user: UserRow,
}

/// A repository with its workspace's state and the caller's membership in it.
#[derive(Debug, Clone, Queryable)]
pub struct RepoAccess {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub name: String,
    pub disabled_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub workspace_deleted_at: Option<DateTime<Utc>>,
    /// The caller's access level in the repo's workspace, if a member.
    pub access: Option<Access>,
}

/// A repository as a left join finds it: every column may be missing.
#[derive(Debug, Clone, Queryable)]
struct MaybeRepo {
    id: Option<Uuid>,
    org_id: Option<Uuid>,
    workspace_id: Option<Uuid>,
    name: Option<String>,
    disabled_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
    workspace_deleted_at: Option<DateTime<Utc>>,
    access: Option<Access>,
}

impl MaybeRepo {
    fn into_repo(self) -> Option<RepoAccess> {
        Some(RepoAccess {
            id: self.id?,
            org_id: self.org_id?,
            workspace_id: self.workspace_id,
            name: self.name?,
            disabled_at: self.disabled_at,
            deleted_at: self.deleted_at,
            workspace_deleted_at: self.workspace_deleted_at,
            access: self.access,
        })
    }
}

/// Who creates a conversation: the holder of an API token (by its SHA-256,
/// looked up with the repository in one query), or a user already
/// authenticated by id (a JWT's subject).
#[derive(Debug, Clone, Copy)]
pub enum Creator {
    Token([u8; 32]),
    User(Uuid),
}

/// Deletes an expired row holding the same caller and key as `$key` (a
/// [`NewIdempotencyKey`]): run before `$key` is written, so an old key can be
/// used again.
macro_rules! expired_key {
    ($key:expr) => {
        diesel::delete(
            idempotency_keys::table.filter(
                idempotency_keys::user_id
                    .eq($key.user_id)
                    .and(idempotency_keys::key.eq($key.key.clone()))
                    .and(idempotency_keys::expires_at.le($key.created_at)),
            ),
        )
    };
}

// The rows a create inserts are derived with `treat_none_as_default_value =
// false`: every field is then a bound parameter (None binds NULL). diesel's
// default wraps each field in an `Option` that may print `DEFAULT`, which
// makes the INSERT's SQL depend on the row, so diesel prepares it anew every
// time instead of once per connection: on PostgreSQL a parse, a plan and a
// round trip more per INSERT (found by profiling; it cost creates a fifth of
// their throughput). `create::statements_are_prepared_once` checks it.

/// What a create writes, as the rules decided: the conversation, its audit
/// event, the idempotency key if the caller sent one, and the reply.
pub struct CreatePlan<R> {
    pub conversation: NewConversation,
    pub event: NewEvent,
    pub key: Option<NewIdempotencyKey>,
    pub reply: R,
}

/// A row of `idempotency_keys` to insert with the conversation.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = idempotency_keys, treat_none_as_default_value = false)]
pub struct NewIdempotencyKey {
    pub user_id: SqlUuid,
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub conversation_id: SqlUuid,
    pub reply: Vec<u8>,
    pub created_at: SqlTime,
    pub expires_at: SqlTime,
}

/// A live idempotency key, as a retry finds it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = idempotency_keys, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct StoredKey {
    pub fingerprint: Vec<u8>,
    pub reply: Vec<u8>,
    pub conversation_id: Uuid,
}

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

impl Store {
    /// The token whose SHA-256 is `hash`, with its user; one indexed lookup.
    pub async fn find_token(&self, hash: [u8; 32]) -> Result<Option<TokenOwner>, StoreError> {
        self.run(move |conn| {
            async move {
                let query = api_tokens::table
                    .inner_join(users::table)
                    .filter(api_tokens::token_hash.eq(hash.to_vec()));
                Ok(with_conn!(&mut *conn, |c| query
                    .select(TokenOwner::as_select())
                    .first(c)
                    .await
                    .optional())?)
            }
            .boxed()
        })
        .await
    }

    /// The user with this id, if any (the subject of a verified JWT).
    pub async fn find_user(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError> {
        self.run(move |conn| {
            async move {
                let query = users::table.filter(users::id.eq(SqlUuid(user_id)));
                Ok(with_conn!(&mut *conn, |c| query
                    .select(UserRow::as_select())
                    .first(c)
                    .await
                    .optional())?)
            }
            .boxed()
        })
        .await
    }

    /// The caller's live (unexpired at `now`) idempotency key `key`, if any.
    pub async fn find_idempotency_key(
        &self,
        user_id: Uuid,
        key: String,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredKey>, StoreError> {
        self.run(move |conn| {
            async move {
                let query = idempotency_keys::table
                    .filter(idempotency_keys::user_id.eq(SqlUuid(user_id)))
                    .filter(idempotency_keys::key.eq(key))
                    .filter(idempotency_keys::expires_at.gt(SqlTime(now)));
                Ok(with_conn!(&mut *conn, |c| query
                    .select(StoredKey::as_select())
                    .first(c)
                    .await
                    .optional())?)
            }
            .boxed()
        })
        .await
    }

    /// Deletes the idempotency keys expired at `now`; returns how many.
    pub async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.run(move |conn| {
            async move {
                let expired = diesel::delete(
                    idempotency_keys::table.filter(idempotency_keys::expires_at.le(SqlTime(now))),
                );
                write_tx!(&mut *conn, |c| Ok(expired.execute(c).await?))
            }
            .boxed()
        })
        .await
    }

    /// Records that a token was used (kept coarse by the caller: this is a write).
    pub async fn touch_token(&self, token_id: Uuid, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.run(move |conn| {
            async move {
                let query =
                    diesel::update(api_tokens::table.filter(api_tokens::id.eq(SqlUuid(token_id))))
                        .set(api_tokens::last_used_at.eq(SqlTime(at)));
                with_conn!(&mut *conn, |c| query.execute(c).await)?;
                Ok(())
            }
            .boxed()
        })
        .await
    }

    /// A whole create in as few hops as each backend allows: finds the token
    /// whose SHA-256 is `hash` (with its user) and the repository `repo_id`
    /// (with its workspace's state and that user's membership) in one query
    /// (for a caller already known by user id, as with a JWT, only the
    /// repository and the membership, and `decide` gets no token owner),
    /// lets `decide` apply the rules, and, if it allows, writes the conversation
    /// and its audit event in one transaction: both or neither.
    ///
    /// - PostgreSQL: one connection; the lookup, then BEGIN, the two INSERTs
    ///   pipelined (they do not depend on each other: an event's `context_id`
    ///   has no foreign key), COMMIT.
    /// - SQLite: the lookup, the rules and the transaction in one job on the
    ///   writer thread ([`super::writer`]), the transaction in its turn at
    ///   the write gate.
    pub async fn create_conversation<R, E, F>(
        &self,
        who: Creator,
        repo_id: Uuid,
        decide: F,
    ) -> Result<Result<R, E>, StoreError>
    where
        R: Send + 'static,
        E: Send + 'static,
        F: FnOnce(Option<TokenOwner>, Option<RepoAccess>) -> Result<CreatePlan<R>, E>
            + Send
            + 'static,
    {
        /// What the rules need, as one query (repository columns may be missing).
        macro_rules! lookup {
            ($hash:expr) => {
                api_tokens::table
                    .inner_join(users::table)
                    .left_join(repos::table.on(repos::id.eq(SqlUuid(repo_id))))
                    .left_join(
                        workspaces::table.on(repos::workspace_id.eq(workspaces::id.nullable())),
                    )
                    .left_join(
                        workspace_members::table.on(workspace_members::workspace_id
                            .nullable()
                            .eq(repos::workspace_id)
                            .and(workspace_members::user_id.eq(users::id))),
                    )
                    .filter(api_tokens::token_hash.eq($hash.to_vec()))
                    .select((
                        TokenOwner::as_select(),
                        (
                            repos::id.nullable(),
                            repos::org_id.nullable(),
                            repos::workspace_id.nullable(),
                            repos::name.nullable(),
                            repos::disabled_at.nullable(),
                            repos::deleted_at.nullable(),
                            workspaces::deleted_at.nullable(),
                            workspace_members::access.nullable(),
                        ),
                    ))
            };
        }
        /// The repository and a known user's membership in its workspace.
        macro_rules! repo_for {
            ($user_id:expr) => {
                repos::table
                    .left_join(
                        workspaces::table.on(repos::workspace_id.eq(workspaces::id.nullable())),
                    )
                    .left_join(
                        workspace_members::table.on(workspace_members::workspace_id
                            .nullable()
                            .eq(repos::workspace_id)
                            .and(workspace_members::user_id.eq(SqlUuid($user_id)))),
                    )
                    .filter(repos::id.eq(SqlUuid(repo_id)))
                    .select((
                        repos::id,
                        repos::org_id,
                        repos::workspace_id,
                        repos::name,
                        repos::disabled_at,
                        repos::deleted_at,
                        workspaces::deleted_at.nullable(),
                        workspace_members::access.nullable(),
                    ))
            };
        }
        fn split(row: Option<(TokenOwner, MaybeRepo)>) -> (Option<TokenOwner>, Option<RepoAccess>) {
            match row {
                None => (None, None),
                Some((owner, repo)) => (Some(owner), repo.into_repo()),
            }
        }
        if let Some(writer) = self.sqlite_writer() {
            let gate = writer.gate().clone();
            return writer
                .run(move |c| {
                    use diesel::RunQueryDsl as Sync;
                    let (owner, repo) = match who {
                        Creator::Token(hash) => split(
                            Sync::first::<(TokenOwner, MaybeRepo)>(lookup!(hash), c).optional()?,
                        ),
                        Creator::User(user_id) => (
                            None,
                            Sync::first::<RepoAccess>(repo_for!(user_id), c).optional()?,
                        ),
                    };
                    let plan = match decide(owner, repo) {
                        Ok(plan) => plan,
                        Err(refused) => return Ok(Err(refused)),
                    };
                    let _turn = gate.blocking_lock();
                    c.immediate_transaction(|c| {
                        if let Some(key) = &plan.key {
                            Sync::execute(expired_key!(key), c)?;
                        }
                        let conversation =
                            diesel::insert_into(conversations::table).values(&plan.conversation);
                        Sync::execute(conversation, c)?;
                        let event = diesel::insert_into(system_events::table).values(&plan.event);
                        Sync::execute(event, c)?;
                        if let Some(key) = &plan.key {
                            let key = diesel::insert_into(idempotency_keys::table).values(key);
                            Sync::execute(key, c)?;
                        }
                        diesel::QueryResult::Ok(())
                    })?;
                    Ok(Ok(plan.reply))
                })
                .await;
        }
        self.run(move |conn| {
            async move {
                let Conn::Pg(pg) = conn else {
                    return Err(StoreError::Internal(
                        "SQLite creates go to its writer".into(),
                    ));
                };
                let c: &AsyncPgConnection = pg;
                // BEGIN goes out in the same write as the lookup, so
                // that the transaction costs no round trip of its own.
                // The transaction is opened by hand (diesel's manager
                // would await BEGIN first): every way out below ends
                // it, and a connection whose ROLLBACK fails is
                // discarded, never pooled mid-transaction.
                let begun = async { (&mut &*c).batch_execute("BEGIN").await };
                let found = async {
                    Ok::<_, diesel::result::Error>(match who {
                        Creator::Token(hash) => split(
                            lookup!(hash)
                                .first::<(TokenOwner, MaybeRepo)>(&mut &*c)
                                .await
                                .optional()?,
                        ),
                        Creator::User(user_id) => (
                            None,
                            repo_for!(user_id)
                                .first::<RepoAccess>(&mut &*c)
                                .await
                                .optional()?,
                        ),
                    })
                };
                let written = async {
                    let (begun, found) = tokio::join!(biased; begun, found);
                    begun?;
                    let (owner, repo) = found?;
                    let plan = match decide(owner, repo) {
                        Ok(plan) => plan,
                        Err(refused) => return Ok(Err(refused)),
                    };
                    if let Some(key) = &plan.key {
                        expired_key!(key).execute(&mut &*c).await?;
                    }
                    tokio::try_join!(
                        biased;
                        diesel::insert_into(conversations::table)
                            .values(&plan.conversation)
                            .execute(&mut &*c),
                        diesel::insert_into(system_events::table)
                            .values(&plan.event)
                            .execute(&mut &*c),
                        async {
                            match &plan.key {
                                Some(key) => diesel::insert_into(idempotency_keys::table)
                                    .values(key)
                                    .execute(&mut &*c)
                                    .await,
                                None => Ok(0),
                            }
                        },
                    )?;
                    Ok::<_, StoreError>(Ok(plan.reply))
                }
                .await;
                let end = match &written {
                    Ok(Ok(_)) => "COMMIT",
                    _ => "ROLLBACK",
                };
                match (written, (&mut &*c).batch_execute(end).await) {
                    (Ok(outcome), Ok(())) => Ok(outcome),
                    // A failed COMMIT ends the transaction too.
                    (Ok(Ok(_)), Err(e)) => Err(e.into()),
                    // The connection's state is unknown: `run` drops it.
                    (_, Err(e)) => Err(StoreError::Unavailable(e.to_string())),
                    (Err(e), Ok(())) => Err(e),
                }
            }
            .boxed()
        })
        .await
    }
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
}

/// A conversation with its repository's name and its creator, as listed.
/// (Serialized: it is the reply an idempotency key replays.)
#[derive(Debug, Clone, Queryable, serde::Serialize, serde::Deserialize)]
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
    pub repo_name: String,
    pub creator_name: Option<String>,
    pub creator_last_name: Option<String>,
    pub creator_email: String,
}

/// The conversations matching a filter's narrowing fields (not its
/// visibility), as a boxed query for the backend the surrounding `with_conn!`
/// branch runs on, without joins or selection.
macro_rules! narrowed {
    ($f:expr) => {{
        let f: &ConversationFilter = $f;
        let mut q = conversations::table
            .filter(conversations::org_id.eq(SqlUuid(f.org_id)))
            .into_boxed();
        if let Some(id) = f.id {
            q = q.filter(conversations::id.eq(SqlUuid(id)));
        }
        if let Some(t) = f.from {
            q = q.filter(conversations::created_at.ge(SqlTime(t)));
        }
        if let Some(t) = f.until {
            q = q.filter(conversations::created_at.lt(SqlTime(t)));
        }
        if let Some(u) = f.created_by {
            q = q.filter(conversations::created_by.eq(SqlUuid(u)));
        }
        if let Some(w) = f.workspace_id {
            q = q.filter(conversations::workspace_id.eq(SqlUuid(w)));
        }
        if let Some(r) = f.repo_id {
            q = q.filter(conversations::repo_id.eq(SqlUuid(r)));
        }
        if !f.show_deleted {
            q = q.filter(conversations::deleted_at.is_null());
        }
        q
    }};
}

/// The conversations a filter matches, visibility included.
macro_rules! matching {
    ($f:expr) => {{
        let f: &ConversationFilter = $f;
        let mut q = narrowed!(f);
        if let Visibility::OwnAndAdministered { user_id } = f.visibility {
            q = q.filter(
                conversations::created_by
                    .eq(SqlUuid(user_id))
                    .or(conversations::workspace_id.eq_any(administered!(user_id))),
            );
        }
        q
    }};
}

/// The workspaces a user administers, as a subquery.
macro_rules! administered {
    ($user_id:expr) => {
        workspace_members::table
            .filter(workspace_members::user_id.eq(SqlUuid($user_id)))
            .filter(workspace_members::access.eq($crate::domain::Access::Admin.as_str()))
            .select(workspace_members::workspace_id)
    };
}

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

/// The columns of a [`ConversationRow`].
macro_rules! row_columns {
    () => {
        (
            conversations::id,
            conversations::org_id,
            conversations::workspace_id,
            conversations::repo_id,
            conversations::created_by,
            conversations::title,
            conversations::tokens_in,
            conversations::tokens_out,
            conversations::created_at,
            conversations::last_updated_at,
            conversations::deleted_at,
            repos::name,
            users::name,
            users::last_name,
            users::email,
        )
    };
}

impl Store {
    /// A page of the matching conversations, newest first, and how many match
    /// in all.
    ///
    /// The page costs about the same whatever the table holds: visibility is
    /// split into sources that each walk one `(…, created_at, id)` index
    /// backwards (the organization; or the caller's own plus each workspace
    /// they administer), each stopping after `skip + take` rows, merged here.
    /// The total comes from `conversation_counts` (a few rows per creator and
    /// workspace) unless a time, repository or id filter asks for a real count.
    /// Repository and creator come in the same query (joins), not one per row.
    pub async fn list_conversations(
        &self,
        filter: ConversationFilter,
        take: i64,
        skip: i64,
    ) -> Result<(Vec<ConversationRow>, i64), StoreError> {
        self.run(move |conn| {
            async move {
                let sources = match filter.visibility {
                    Visibility::Organization => vec![Source::Organization],
                    Visibility::OwnAndAdministered { user_id } => {
                        let administered = with_conn!(&mut *conn, |c| {
                            administered!(user_id).load::<Uuid>(c).await
                        })?;
                        std::iter::once(Source::Creator(user_id))
                            .chain(administered.into_iter().map(Source::Workspace))
                            .collect()
                    }
                };
                let window = skip.saturating_add(take);
                let mut rows: Vec<ConversationRow> = Vec::new();
                for source in sources {
                    let part = with_conn!(&mut *conn, |c| {
                        let q = narrowed!(&filter);
                        let q = match source {
                            Source::Organization => q,
                            Source::Creator(u) => {
                                q.filter(conversations::created_by.eq(SqlUuid(u)))
                            }
                            Source::Workspace(w) => {
                                q.filter(conversations::workspace_id.eq(SqlUuid(w)))
                            }
                        };
                        q.inner_join(repos::table)
                            .inner_join(users::table)
                            .select(row_columns!())
                            .order((conversations::created_at.desc(), conversations::id.desc()))
                            .limit(window)
                            .load::<ConversationRow>(c)
                            .await
                    })?;
                    rows.extend(part);
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
                } else if filter.id.is_none()
                    && filter.from.is_none()
                    && filter.until.is_none()
                    && filter.repo_id.is_none()
                {
                    let counts = with_conn!(&mut *conn, |c| {
                        let mut q = conversation_counts::table
                            .filter(conversation_counts::org_id.eq(SqlUuid(filter.org_id)))
                            .into_boxed();
                        if let Visibility::OwnAndAdministered { user_id } = filter.visibility {
                            q = q.filter(conversation_counts::created_by.eq(SqlUuid(user_id)).or(
                                conversation_counts::workspace_id.eq_any(administered!(user_id)),
                            ));
                        }
                        if let Some(u) = filter.created_by {
                            q = q.filter(conversation_counts::created_by.eq(SqlUuid(u)));
                        }
                        if let Some(w) = filter.workspace_id {
                            q = q.filter(conversation_counts::workspace_id.eq(SqlUuid(w)));
                        }
                        q.select((conversation_counts::live, conversation_counts::deleted))
                            .load::<(i64, i64)>(c)
                            .await
                    })?;
                    counts
                        .iter()
                        .map(|(live, deleted)| {
                            live + if filter.show_deleted { *deleted } else { 0 }
                        })
                        .sum()
                } else {
                    with_conn!(&mut *conn, |c| {
                        matching!(&filter).count().get_result::<i64>(c).await
                    })?
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
        self.run(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| {
                    matching!(&filter)
                        .inner_join(repos::table)
                        .inner_join(users::table)
                        .select(row_columns!())
                        .first::<ConversationRow>(c)
                        .await
                        .optional()
                })?)
            }
            .boxed()
        })
        .await
    }

    /// Deletes a conversation the caller may see (as `filter` says), softly or
    /// for good, and writes its audit event in the same transaction. Returns
    /// false, having written nothing, when there was nothing to delete.
    pub async fn delete_conversation(
        &self,
        filter: ConversationFilter,
        hard: bool,
        event: impl FnOnce(&ConversationRow) -> NewEvent + Send + 'static,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let found = matching!(&filter)
                        .inner_join(repos::table)
                        .inner_join(users::table)
                        .select(row_columns!())
                        .first::<ConversationRow>(c)
                        .await
                        .optional()?;
                    let Some(row) = found else {
                        return Ok(false);
                    };
                    let target = conversations::table.filter(conversations::id.eq(SqlUuid(row.id)));
                    let changed = if hard {
                        diesel::delete(target).execute(c).await?
                    } else {
                        diesel::update(target.filter(conversations::deleted_at.is_null()))
                            .set(conversations::deleted_at.eq(SqlTime(super::types::now())))
                            .execute(c)
                            .await?
                    };
                    if changed == 0 {
                        return Ok(false);
                    }
                    diesel::insert_into(system_events::table)
                        .values(&event(&row))
                        .execute(c)
                        .await?;
                    Ok(true)
                })
            }
            .boxed()
        })
        .await
    }
}
