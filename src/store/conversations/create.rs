//! Creating a conversation, in as few hops as each backend allows. Both
//! bodies are here, side by side, writing the same rows ([`CreatePlan`]):
//!
//! - PostgreSQL ([`create_on_postgres`]): one connection; BEGIN goes out with
//!   the lookup, then the INSERTs pipelined (they do not depend on each other:
//!   an event's `context_id` has no foreign key), COMMIT.
//! - SQLite ([`create_on_sqlite`]): the lookup, the rules and the transaction
//!   in one job on the writer thread ([`super::super::writer`]), the
//!   transaction in its turn at the write gate.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection as _};
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::{NewConversation, NewEvent};
use crate::domain::Access;
use crate::store::auth::TokenOwner;
use crate::store::idempotency::{NewIdempotencyKey, expired_key};
use crate::store::schema::{
    api_tokens, conversations, idempotency_keys, repos, system_events, users, workspace_members,
    workspaces,
};
use crate::store::types::SqlUuid;
use crate::store::writer::Writer;
use crate::store::{Conn, Store, StoreError};
use chrono::{DateTime, Utc};

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

/// What a create writes, as the rules decided: the conversation, its audit
/// event, the idempotency key if the caller sent one, and the reply.
pub struct CreatePlan<R> {
    pub conversation: NewConversation,
    pub event: NewEvent,
    pub key: Option<NewIdempotencyKey>,
    pub reply: R,
}

/// What the rules need, as one query: the token `$hash` with its user, and
/// the repository `$repo_id` with its workspace's state and that user's
/// membership (repository columns may be missing). A macro: the SQLite
/// writer runs it through diesel's sync API, PostgreSQL through the async
/// one, and the two want the query built for their own backend.
macro_rules! lookup {
    ($hash:expr, $repo_id:expr) => {
        api_tokens::table
            .inner_join(users::table)
            .left_join(repos::table.on(repos::id.eq(SqlUuid($repo_id))))
            .left_join(workspaces::table.on(repos::workspace_id.eq(workspaces::id.nullable())))
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

/// The repository `$repo_id` and a known user's membership in its workspace
/// (a macro for the reason [`lookup`] is one).
macro_rules! repo_for {
    ($user_id:expr, $repo_id:expr) => {
        repos::table
            .left_join(workspaces::table.on(repos::workspace_id.eq(workspaces::id.nullable())))
            .left_join(
                workspace_members::table.on(workspace_members::workspace_id
                    .nullable()
                    .eq(repos::workspace_id)
                    .and(workspace_members::user_id.eq(SqlUuid($user_id)))),
            )
            .filter(repos::id.eq(SqlUuid($repo_id)))
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

/// The token owner and the repository, from the lookup's one row.
fn split(row: Option<(TokenOwner, MaybeRepo)>) -> (Option<TokenOwner>, Option<RepoAccess>) {
    match row {
        None => (None, None),
        Some((owner, repo)) => (Some(owner), repo.into_repo()),
    }
}

/// The rules a create applies to what the lookup found: `Ok(plan)` to write,
/// `Err(refusal)` to write nothing.
pub trait Decide<R, E>:
    FnOnce(Option<TokenOwner>, Option<RepoAccess>) -> Result<CreatePlan<R>, E> + Send + 'static
{
}

impl<R, E, F> Decide<R, E> for F where
    F: FnOnce(Option<TokenOwner>, Option<RepoAccess>) -> Result<CreatePlan<R>, E> + Send + 'static
{
}

impl Store {
    /// A whole create: finds the token whose SHA-256 is in `who` (with its
    /// user) and the repository `repo_id` (with its workspace's state and that
    /// user's membership) in one query (for a caller already known by user
    /// id, as with a JWT, only the repository and the membership, and `decide`
    /// gets no token owner), lets `decide` apply the rules, and, if it allows,
    /// writes the conversation and its audit event (and the idempotency key)
    /// in one transaction: all or nothing.
    pub async fn create_conversation<R, E>(
        &self,
        who: Creator,
        repo_id: Uuid,
        decide: impl Decide<R, E>,
    ) -> Result<Result<R, E>, StoreError>
    where
        R: Send + 'static,
        E: Send + 'static,
    {
        match self.sqlite_writer() {
            Some(writer) => {
                let created = create_on_sqlite(writer, who, repo_id, decide).await;
                self.note_write(&created);
                created
            }
            None => {
                let begin: std::sync::Arc<str> = self.begin_sql().into();
                self.run_in_own_transaction(move |conn| {
                    async move { create_on_postgres(conn, &begin, who, repo_id, decide).await }
                        .boxed()
                })
                .await
            }
        }
    }
}

/// The create on SQLite: one job on the writer thread.
async fn create_on_sqlite<R, E>(
    writer: &Writer,
    who: Creator,
    repo_id: Uuid,
    decide: impl Decide<R, E>,
) -> Result<Result<R, E>, StoreError>
where
    R: Send + 'static,
    E: Send + 'static,
{
    let gate = writer.gate().clone();
    writer
        .run(move |c| {
            use diesel::RunQueryDsl as Sync;
            let (owner, repo) = match who {
                Creator::Token(hash) => split(
                    Sync::first::<(TokenOwner, MaybeRepo)>(lookup!(hash, repo_id), c).optional()?,
                ),
                Creator::User(user_id) => (
                    None,
                    Sync::first::<RepoAccess>(repo_for!(user_id, repo_id), c).optional()?,
                ),
            };
            let plan = match decide(owner, repo) {
                Ok(plan) => plan,
                Err(refused) => return Ok(Err(refused)),
            };
            let _turn = gate.blocking_lock();
            c.immediate_transaction(|c| {
                if let Some(key) = &plan.key {
                    Sync::execute(expired_key(key), c)?;
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
        .await
}

/// The create on PostgreSQL, on one pooled connection. The transaction is
/// opened by hand (diesel's manager would await BEGIN first, a round trip of
/// its own): every way out ends it, and a connection whose ROLLBACK fails is
/// discarded by `Store::run`, never pooled mid-transaction.
async fn create_on_postgres<R, E>(
    conn: &mut Conn,
    begin: &str,
    who: Creator,
    repo_id: Uuid,
    decide: impl Decide<R, E>,
) -> Result<Result<R, E>, StoreError> {
    let Conn::Pg(pg) = conn else {
        return Err(StoreError::Internal(
            "SQLite creates go to its writer".into(),
        ));
    };
    let c: &AsyncPgConnection = pg;
    let begun = async { (&mut &*c).batch_execute(begin).await };
    let found = async {
        Ok::<_, diesel::result::Error>(match who {
            Creator::Token(hash) => split(
                lookup!(hash, repo_id)
                    .first::<(TokenOwner, MaybeRepo)>(&mut &*c)
                    .await
                    .optional()?,
            ),
            Creator::User(user_id) => (
                None,
                repo_for!(user_id, repo_id)
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
        insert_on_postgres(c, &plan.conversation, &plan.event, plan.key.as_ref()).await?;
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

/// A plan's rows, pipelined on an open PostgreSQL transaction.
async fn insert_on_postgres(
    c: &AsyncPgConnection,
    conversation: &NewConversation,
    event: &NewEvent,
    key: Option<&NewIdempotencyKey>,
) -> Result<(), diesel::result::Error> {
    if let Some(key) = key {
        expired_key(key).execute(&mut &*c).await?;
    }
    tokio::try_join!(
        biased;
        diesel::insert_into(conversations::table)
            .values(conversation)
            .execute(&mut &*c),
        diesel::insert_into(system_events::table)
            .values(event)
            .execute(&mut &*c),
        async {
            match key {
                Some(key) => diesel::insert_into(idempotency_keys::table)
                    .values(key)
                    .execute(&mut &*c)
                    .await,
                None => Ok(0),
            }
        },
    )?;
    Ok(())
}
