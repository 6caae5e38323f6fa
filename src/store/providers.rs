//! Model provider configurations (`ai_llms`) and the repositories they are
//! attached to (`ai_llm_repos`). Every change writes its audit event in the
//! same transaction. Secrets arrive here sealed (see `crate::secrets`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::conversations::NewEvent;
use super::schema::{ai_llm_repos, ai_llms, repos, system_events, workspace_members, workspaces};
use super::types::{SqlTime, SqlUuid};
use super::{Store, StoreError};
use crate::domain::AiType;
use crate::{with_conn, write_tx};

/// A stored configuration (its secrets sealed).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ai_llms, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct AiLlmRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub created_by: Uuid,
    pub name: String,
    pub ai_type: AiType,
    pub endpoint: String,
    pub key_sealed: Option<Vec<u8>>,
    pub secret_sealed: Vec<u8>,
    pub secrets_key_id: String,
    pub validated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A configuration to insert.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = ai_llms, treat_none_as_default_value = false)]
pub struct NewAiLlm {
    pub id: SqlUuid,
    pub org_id: SqlUuid,
    pub workspace_id: SqlUuid,
    pub created_by: SqlUuid,
    pub name: String,
    pub ai_type: String,
    pub endpoint: String,
    pub key_sealed: Option<Vec<u8>>,
    pub secret_sealed: Vec<u8>,
    pub secrets_key_id: String,
    pub validated_at: Option<SqlTime>,
    pub created_at: SqlTime,
    pub updated_at: SqlTime,
}

/// What an update changes (`None`: unchanged). Sealed values come with the
/// id of the key that sealed them.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = ai_llms)]
pub struct AiLlmChanges {
    pub name: Option<String>,
    pub ai_type: Option<String>,
    pub endpoint: Option<String>,
    pub key_sealed: Option<Option<Vec<u8>>>,
    pub secret_sealed: Option<Vec<u8>>,
    pub secrets_key_id: Option<String>,
    /// Cleared when the endpoint or a credential changes: it must validate again.
    pub validated_at: Option<Option<SqlTime>>,
    pub updated_at: Option<SqlTime>,
}

/// A repository a configuration is attached to.
#[derive(Debug, Clone, Queryable)]
pub struct AttachedRepo {
    pub ai_llm_id: Uuid,
    pub repo_id: Uuid,
    pub name: String,
    pub attached_at: DateTime<Utc>,
}

/// A workspace, as permissions need it.
#[derive(Debug, Clone, Queryable)]
pub struct WorkspaceRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A repository, as an attachment needs it.
#[derive(Debug, Clone, Queryable)]
pub struct RepoRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Done,
    /// Refused: this many repositories use it.
    InUse(i64),
    Missing,
}

impl Store {
    /// A workspace by id.
    pub async fn find_workspace(&self, id: Uuid) -> Result<Option<WorkspaceRow>, StoreError> {
        self.run(move |conn| {
            async move {
                let query = workspaces::table
                    .filter(workspaces::id.eq(SqlUuid(id)))
                    .select((workspaces::id, workspaces::org_id, workspaces::deleted_at));
                Ok(with_conn!(&mut *conn, |c| query
                    .first::<WorkspaceRow>(c)
                    .await
                    .optional())?)
            }
            .boxed()
        })
        .await
    }

    /// A repository by id.
    pub async fn find_repo(&self, id: Uuid) -> Result<Option<RepoRow>, StoreError> {
        self.run(move |conn| {
            async move {
                let query = repos::table.filter(repos::id.eq(SqlUuid(id))).select((
                    repos::id,
                    repos::org_id,
                    repos::workspace_id,
                    repos::deleted_at,
                ));
                Ok(with_conn!(&mut *conn, |c| query
                    .first::<RepoRow>(c)
                    .await
                    .optional())?)
            }
            .boxed()
        })
        .await
    }

    /// Inserts a configuration and its audit event.
    pub async fn create_ai_llm(&self, row: NewAiLlm, event: NewEvent) -> Result<(), StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    diesel::insert_into(ai_llms::table)
                        .values(&row)
                        .execute(c)
                        .await?;
                    diesel::insert_into(system_events::table)
                        .values(&event)
                        .execute(c)
                        .await?;
                    Ok(())
                })
            }
            .boxed()
        })
        .await
    }

    /// One configuration by id.
    pub async fn find_ai_llm(&self, id: Uuid) -> Result<Option<AiLlmRow>, StoreError> {
        self.run(move |conn| {
            async move {
                let query = ai_llms::table.filter(ai_llms::id.eq(SqlUuid(id)));
                Ok(with_conn!(&mut *conn, |c| query
                    .select(AiLlmRow::as_select())
                    .first(c)
                    .await
                    .optional())?)
            }
            .boxed()
        })
        .await
    }

    /// The configurations of an organization's live workspaces, by name:
    /// all of them (`member: None`), or those of the workspaces `member`
    /// belongs to; only `workspace_id`'s when given.
    pub async fn list_ai_llms(
        &self,
        org_id: Uuid,
        member: Option<Uuid>,
        workspace_id: Option<Uuid>,
    ) -> Result<Vec<AiLlmRow>, StoreError> {
        self.run(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| {
                    let live = workspaces::table
                        .filter(workspaces::org_id.eq(SqlUuid(org_id)))
                        .filter(workspaces::deleted_at.is_null())
                        .select(workspaces::id);
                    let mut q = ai_llms::table
                        .filter(ai_llms::org_id.eq(SqlUuid(org_id)))
                        .filter(ai_llms::workspace_id.eq_any(live))
                        .into_boxed();
                    if let Some(user_id) = member {
                        let reachable = workspace_members::table
                            .filter(workspace_members::user_id.eq(SqlUuid(user_id)))
                            .select(workspace_members::workspace_id);
                        q = q.filter(ai_llms::workspace_id.eq_any(reachable));
                    }
                    if let Some(w) = workspace_id {
                        q = q.filter(ai_llms::workspace_id.eq(SqlUuid(w)));
                    }
                    q.order((ai_llms::name.asc(), ai_llms::id.asc()))
                        .select(AiLlmRow::as_select())
                        .load(c)
                        .await
                })?)
            }
            .boxed()
        })
        .await
    }

    /// The repositories attached to each of `ids`, in attach order.
    pub async fn attached_repos(&self, ids: Vec<Uuid>) -> Result<Vec<AttachedRepo>, StoreError> {
        self.run(move |conn| {
            async move {
                let ids: Vec<SqlUuid> = ids.into_iter().map(SqlUuid).collect();
                let query = ai_llm_repos::table
                    .inner_join(repos::table)
                    .filter(ai_llm_repos::ai_llm_id.eq_any(ids))
                    .order((ai_llm_repos::attached_at.asc(), ai_llm_repos::repo_id.asc()))
                    .select((
                        ai_llm_repos::ai_llm_id,
                        ai_llm_repos::repo_id,
                        repos::name,
                        ai_llm_repos::attached_at,
                    ));
                Ok(with_conn!(&mut *conn, |c| query
                    .load::<AttachedRepo>(c)
                    .await)?)
            }
            .boxed()
        })
        .await
    }

    /// Applies `changes` to configuration `id` and writes its audit event;
    /// false, writing nothing, if it is gone.
    pub async fn update_ai_llm(
        &self,
        id: Uuid,
        changes: AiLlmChanges,
        event: NewEvent,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let changed =
                        diesel::update(ai_llms::table.filter(ai_llms::id.eq(SqlUuid(id))))
                            .set(&changes)
                            .execute(c)
                            .await?;
                    if changed == 0 {
                        return Ok(false);
                    }
                    diesel::insert_into(system_events::table)
                        .values(&event)
                        .execute(c)
                        .await?;
                    Ok(true)
                })
            }
            .boxed()
        })
        .await
    }

    /// Deletes configuration `id` for good, with its audit event, unless a
    /// repository uses it.
    pub async fn delete_ai_llm(&self, id: Uuid, event: NewEvent) -> Result<Deleted, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let users = ai_llm_repos::table
                        .filter(ai_llm_repos::ai_llm_id.eq(SqlUuid(id)))
                        .count()
                        .get_result::<i64>(c)
                        .await?;
                    if users > 0 {
                        return Ok(Deleted::InUse(users));
                    }
                    let gone = diesel::delete(ai_llms::table.filter(ai_llms::id.eq(SqlUuid(id))))
                        .execute(c)
                        .await?;
                    if gone == 0 {
                        return Ok(Deleted::Missing);
                    }
                    diesel::insert_into(system_events::table)
                        .values(&event)
                        .execute(c)
                        .await?;
                    Ok(Deleted::Done)
                })
            }
            .boxed()
        })
        .await
    }

    /// Attaches repository `repo_id` to configuration `id` (again is a
    /// no-op: false), with its audit event.
    pub async fn attach_repo(
        &self,
        id: Uuid,
        repo_id: Uuid,
        at: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let attached = diesel::insert_into(ai_llm_repos::table)
                        .values((
                            ai_llm_repos::ai_llm_id.eq(SqlUuid(id)),
                            ai_llm_repos::repo_id.eq(SqlUuid(repo_id)),
                            ai_llm_repos::attached_at.eq(SqlTime(at)),
                        ))
                        .on_conflict_do_nothing()
                        .execute(c)
                        .await?;
                    if attached == 0 {
                        return Ok(false);
                    }
                    diesel::insert_into(system_events::table)
                        .values(&event)
                        .execute(c)
                        .await?;
                    Ok(true)
                })
            }
            .boxed()
        })
        .await
    }

    /// Detaches repository `repo_id` from configuration `id`, with its audit
    /// event; false, writing nothing, if it was not attached.
    pub async fn detach_repo(
        &self,
        id: Uuid,
        repo_id: Uuid,
        event: NewEvent,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let detached = diesel::delete(
                        ai_llm_repos::table
                            .filter(ai_llm_repos::ai_llm_id.eq(SqlUuid(id)))
                            .filter(ai_llm_repos::repo_id.eq(SqlUuid(repo_id))),
                    )
                    .execute(c)
                    .await?;
                    if detached == 0 {
                        return Ok(false);
                    }
                    diesel::insert_into(system_events::table)
                        .values(&event)
                        .execute(c)
                        .await?;
                    Ok(true)
                })
            }
            .boxed()
        })
        .await
    }

    /// The configurations attached to a repository, in attach order.
    pub async fn configurations_of_repo(&self, repo_id: Uuid) -> Result<Vec<AiLlmRow>, StoreError> {
        self.run(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| ai_llm_repos::table
                    .inner_join(ai_llms::table)
                    .filter(ai_llm_repos::repo_id.eq(SqlUuid(repo_id)))
                    .order((
                        ai_llm_repos::attached_at.asc(),
                        ai_llm_repos::ai_llm_id.asc()
                    ))
                    .select(AiLlmRow::as_select())
                    .load(c)
                    .await)?)
            }
            .boxed()
        })
        .await
    }

    /// Records that configuration `id`, as it was at `version` (its
    /// `updated_at`), answered a validation at `at`; one changed since is
    /// left unvalidated.
    pub async fn mark_validated(
        &self,
        id: Uuid,
        version: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.run(move |conn| {
            async move {
                let update = diesel::update(
                    ai_llms::table
                        .filter(ai_llms::id.eq(SqlUuid(id)))
                        .filter(ai_llms::updated_at.eq(SqlTime(version))),
                )
                .set(ai_llms::validated_at.eq(Some(SqlTime(at))));
                write_tx!(&mut *conn, |c| {
                    update.execute(c).await?;
                    Ok(())
                })
            }
            .boxed()
        })
        .await
    }

    /// Every stored configuration (for re-sealing its secrets).
    pub async fn all_ai_llms(&self) -> Result<Vec<AiLlmRow>, StoreError> {
        self.run(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| ai_llms::table
                    .order(ai_llms::id.asc())
                    .select(AiLlmRow::as_select())
                    .load(c)
                    .await)?)
            }
            .boxed()
        })
        .await
    }

    /// Replaces a configuration's sealed values (key rotation; the values
    /// themselves do not change, so no event), only if its stored secret is
    /// still `seen` (each sealing is unique: a fresh nonce), so a concurrent
    /// change of credentials is never overwritten with the old ones. Whether
    /// it was replaced.
    pub async fn reseal_ai_llm(
        &self,
        id: Uuid,
        seen: Vec<u8>,
        key_sealed: Option<Vec<u8>>,
        secret_sealed: Vec<u8>,
        secrets_key_id: String,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| {
            async move {
                let update = diesel::update(
                    ai_llms::table
                        .filter(ai_llms::id.eq(SqlUuid(id)))
                        .filter(ai_llms::secret_sealed.eq(seen)),
                )
                .set((
                    ai_llms::key_sealed.eq(key_sealed),
                    ai_llms::secret_sealed.eq(secret_sealed),
                    ai_llms::secrets_key_id.eq(secrets_key_id),
                ));
                write_tx!(&mut *conn, |c| Ok(update.execute(c).await? == 1))
            }
            .boxed()
        })
        .await
    }

    /// How many sealed secrets are stored: configurations and webhooks (the
    /// service refuses to start without a secrets key once there are any).
    pub async fn count_sealed(&self) -> Result<i64, StoreError> {
        use super::schema::org_webhooks;
        self.run(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| {
                    let llms = ai_llms::table.count().get_result::<i64>(c).await?;
                    let hooks = org_webhooks::table.count().get_result::<i64>(c).await?;
                    Ok::<_, diesel::result::Error>(llms + hooks)
                })?)
            }
            .boxed()
        })
        .await
    }
}
