//! Governance policies (`policies`), the violations and alerts they raise
//! (`policy_violations`, `policy_alerts`), and the webhook outbox that
//! carries alerts out (`org_webhooks`, `webhook_deliveries`, in `webhooks`).
//! Every change writes its audit event in the same transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::conversations::NewEvent;
use super::schema::{
    ai_llms, policies, policy_alerts, policy_violations, repos, system_events, users,
    webhook_deliveries, workspace_members, workspaces,
};
use super::types::{SqlTime, SqlUuid};
use super::{Store, StoreError};
use crate::domain::RiskType;
use crate::{with_conn, write_tx};

/// A stored policy.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = policies, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct PolicyRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub repo_id: Option<Uuid>,
    pub name: String,
    pub content: String,
    /// A JSON array of regular expressions.
    pub patterns: String,
    pub risk_type: RiskType,
    pub action_type: i32,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_by: Uuid,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl PolicyRow {
    /// Its patterns, as stored (a JSON array of strings).
    pub fn pattern_list(&self) -> Result<Vec<String>, serde_json::Error> {
        serde_json::from_str(&self.patterns)
    }
}

/// A policy to insert.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = policies, treat_none_as_default_value = false)]
pub struct NewPolicy {
    pub id: SqlUuid,
    pub org_id: SqlUuid,
    pub workspace_id: Option<SqlUuid>,
    pub repo_id: Option<SqlUuid>,
    pub name: String,
    pub content: String,
    pub patterns: String,
    pub risk_type: String,
    pub action_type: i32,
    pub created_by: SqlUuid,
    pub created_at: SqlTime,
    pub updated_by: SqlUuid,
    pub updated_at: SqlTime,
    pub deleted_at: Option<SqlTime>,
}

/// What an update changes (`None`: unchanged); who and when always.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = policies)]
pub struct PolicyChanges {
    pub name: Option<String>,
    pub content: Option<String>,
    pub patterns: Option<String>,
    pub risk_type: Option<String>,
    pub action_type: Option<i32>,
    pub updated_by: SqlUuid,
    pub updated_at: SqlTime,
}

/// A person as a policy or a violation names them.
#[derive(Debug, Clone, Queryable)]
pub struct PersonRow {
    pub id: Uuid,
    pub name: Option<String>,
    pub last_name: Option<String>,
    pub email: String,
}

/// Which policies a list shows.
#[derive(Debug, Clone, Copy)]
pub struct PolicyFilter {
    pub org_id: Uuid,
    /// Only these visible (`None`: an organization administrator sees all):
    /// the organization's and those of the workspaces this user belongs to.
    pub member: Option<Uuid>,
    /// The scope listed: the organization's own (both `None`), a
    /// workspace's, or a repository's (its workspace optional).
    pub workspace_id: Option<Uuid>,
    pub repo_id: Option<Uuid>,
}

/// A violation to record.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = policy_violations, treat_none_as_default_value = false)]
pub struct NewViolation {
    pub id: SqlUuid,
    pub org_id: SqlUuid,
    pub workspace_id: SqlUuid,
    pub repo_id: SqlUuid,
    pub policy_id: SqlUuid,
    pub conversation_id: Option<SqlUuid>,
    pub user_id: SqlUuid,
    pub stage: String,
    pub explanation: String,
    pub severity: String,
    pub block: bool,
    pub ai_llm_id: Option<SqlUuid>,
    pub llm_type: String,
    pub llm_model: String,
    pub host: String,
    pub created_at: SqlTime,
}

/// An alert to record.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = policy_alerts)]
pub struct NewAlert {
    pub id: SqlUuid,
    pub violation_id: SqlUuid,
    pub message: String,
    pub created_at: SqlTime,
}

/// A webhook delivery to make.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = webhook_deliveries, treat_none_as_default_value = false)]
pub struct NewDelivery {
    pub id: SqlUuid,
    pub org_id: SqlUuid,
    pub alert_id: SqlUuid,
    pub body: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: SqlTime,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: SqlTime,
    pub delivered_at: Option<SqlTime>,
}

/// What a turn's check found, written together: violations, their alerts,
/// the events of both, and the webhook deliveries of the alerts.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub violations: Vec<NewViolation>,
    pub alerts: Vec<NewAlert>,
    pub events: Vec<NewEvent>,
    pub deliveries: Vec<NewDelivery>,
    /// A blocked turn's usage, and the violations' rollups.
    pub usage: crate::store::usage::UsageWrite,
}

/// Which violations (or alerts) a list shows.
#[derive(Debug, Clone, Default)]
pub struct ViolationFilter {
    pub org_id: Uuid,
    /// Only those in the workspaces this user belongs to (`None`: all).
    pub member: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub repo_id: Option<Uuid>,
    pub policy_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub llm_types: Vec<String>,
    pub llm_models: Vec<String>,
    pub hosts: Vec<String>,
    pub severities: Vec<String>,
    pub block: Option<bool>,
    /// Alerts: only violations that raised one.
    pub alerts_only: bool,
    pub take: i64,
    pub skip: i64,
}

/// A violation as listed: its own columns ...
#[derive(Debug, Clone, Queryable)]
pub struct ViolationRow {
    pub id: Uuid,
    pub policy_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub explanation: String,
    pub conversation_id: Option<Uuid>,
    pub repo_id: Uuid,
    pub user_id: Uuid,
    pub ai_llm_id: Option<Uuid>,
    pub severity: RiskType,
    pub block: bool,
    pub llm_type: String,
    pub llm_model: String,
    pub host: String,
}

/// ... and the names it shows, and its alert's, if any.
#[derive(Debug, Clone, Queryable)]
pub struct ViolationNames {
    pub policy_name: String,
    pub repo_name: String,
    pub user_name: Option<String>,
    pub user_last_name: Option<String>,
    pub ai_llm_name: Option<String>,
    pub alert_id: Option<Uuid>,
    pub alert_message: Option<String>,
    pub alert_at: Option<DateTime<Utc>>,
}

/// The boxed query of [`ViolationFilter`] on one backend's connection.
macro_rules! violations_query {
    ($f:expr) => {{
        let f = $f;
        let mut q = policy_violations::table
            .inner_join(policies::table.on(policies::id.eq(policy_violations::policy_id)))
            .inner_join(repos::table.on(repos::id.eq(policy_violations::repo_id)))
            .inner_join(users::table.on(users::id.eq(policy_violations::user_id)))
            .left_join(ai_llms::table.on(ai_llms::id.nullable().eq(policy_violations::ai_llm_id)))
            .left_join(
                policy_alerts::table.on(policy_alerts::violation_id.eq(policy_violations::id)),
            )
            .filter(policy_violations::org_id.eq(SqlUuid(f.org_id)))
            .into_boxed();
        if let Some(user_id) = f.member {
            let reachable = workspace_members::table
                .filter(workspace_members::user_id.eq(SqlUuid(user_id)))
                .select(workspace_members::workspace_id);
            q = q.filter(policy_violations::workspace_id.eq_any(reachable));
        }
        if let Some(w) = f.workspace_id {
            q = q.filter(policy_violations::workspace_id.eq(SqlUuid(w)));
        }
        if let Some(r) = f.repo_id {
            q = q.filter(policy_violations::repo_id.eq(SqlUuid(r)));
        }
        if let Some(p) = f.policy_id {
            q = q.filter(policy_violations::policy_id.eq(SqlUuid(p)));
        }
        if let Some(from) = f.from {
            q = q.filter(policy_violations::created_at.ge(SqlTime(from)));
        }
        if let Some(to) = f.to {
            q = q.filter(policy_violations::created_at.lt(SqlTime(to)));
        }
        if !f.llm_types.is_empty() {
            q = q.filter(policy_violations::llm_type.eq_any(f.llm_types.clone()));
        }
        if !f.llm_models.is_empty() {
            q = q.filter(policy_violations::llm_model.eq_any(f.llm_models.clone()));
        }
        if !f.hosts.is_empty() {
            q = q.filter(policy_violations::host.eq_any(f.hosts.clone()));
        }
        if !f.severities.is_empty() {
            q = q.filter(policy_violations::severity.eq_any(f.severities.clone()));
        }
        if let Some(block) = f.block {
            q = q.filter(policy_violations::block.eq(block));
        }
        if f.alerts_only {
            q = q.filter(policy_alerts::id.nullable().is_not_null());
        }
        q
    }};
}

impl Store {
    /// Inserts a policy and its audit event.
    pub async fn create_policy(&self, row: NewPolicy, event: NewEvent) -> Result<(), StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    diesel::insert_into(policies::table)
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

    /// One policy by id (deleted ones too: the caller decides).
    pub async fn find_policy(&self, id: Uuid) -> Result<Option<PolicyRow>, StoreError> {
        self.run(move |conn| {
            async move {
                let query = policies::table.filter(policies::id.eq(SqlUuid(id)));
                Ok(with_conn!(&mut *conn, |c| query
                    .select(PolicyRow::as_select())
                    .first(c)
                    .await
                    .optional())?)
            }
            .boxed()
        })
        .await
    }

    /// The live policies of one scope, oldest first, as `filter` shows them.
    pub async fn list_policies(&self, filter: PolicyFilter) -> Result<Vec<PolicyRow>, StoreError> {
        self.run(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| {
                    let mut q = policies::table
                        .filter(policies::org_id.eq(SqlUuid(filter.org_id)))
                        .filter(policies::deleted_at.is_null())
                        .into_boxed();
                    q = match (filter.workspace_id, filter.repo_id) {
                        (None, None) => q.filter(policies::workspace_id.is_null()),
                        (Some(w), None) => q
                            .filter(policies::workspace_id.eq(SqlUuid(w)))
                            .filter(policies::repo_id.is_null()),
                        (w, Some(r)) => {
                            let q = q.filter(policies::repo_id.eq(SqlUuid(r)));
                            match w {
                                Some(w) => q.filter(policies::workspace_id.eq(SqlUuid(w))),
                                None => q,
                            }
                        }
                    };
                    if let Some(user_id) = filter.member {
                        let reachable = workspace_members::table
                            .filter(workspace_members::user_id.eq(SqlUuid(user_id)))
                            .select(workspace_members::workspace_id.nullable());
                        q = q.filter(
                            policies::workspace_id
                                .is_null()
                                .or(policies::workspace_id.eq_any(reachable)),
                        );
                    }
                    q.order((policies::created_at.asc(), policies::id.asc()))
                        .select(PolicyRow::as_select())
                        .load(c)
                        .await
                })?)
            }
            .boxed()
        })
        .await
    }

    /// The live policies that apply to a repository: its organization's,
    /// its workspace's and its own.
    pub async fn applicable_policies(
        &self,
        org_id: Uuid,
        workspace_id: Uuid,
        repo_id: Uuid,
    ) -> Result<Vec<PolicyRow>, StoreError> {
        self.run(move |conn| {
            async move {
                let query = policies::table
                    .filter(policies::org_id.eq(SqlUuid(org_id)))
                    .filter(policies::deleted_at.is_null())
                    .filter(
                        policies::workspace_id
                            .is_null()
                            .or(policies::workspace_id.eq(SqlUuid(workspace_id))),
                    )
                    .filter(
                        policies::repo_id
                            .is_null()
                            .or(policies::repo_id.eq(SqlUuid(repo_id))),
                    )
                    .order((policies::created_at.asc(), policies::id.asc()));
                Ok(with_conn!(&mut *conn, |c| query
                    .select(PolicyRow::as_select())
                    .load(c)
                    .await)?)
            }
            .boxed()
        })
        .await
    }

    /// The people `ids` name.
    pub async fn people(&self, ids: Vec<Uuid>) -> Result<Vec<PersonRow>, StoreError> {
        self.run(move |conn| {
            async move {
                let ids: Vec<SqlUuid> = ids.into_iter().map(SqlUuid).collect();
                let query = users::table.filter(users::id.eq_any(ids)).select((
                    users::id,
                    users::name,
                    users::last_name,
                    users::email,
                ));
                Ok(with_conn!(&mut *conn, |c| query
                    .load::<PersonRow>(c)
                    .await)?)
            }
            .boxed()
        })
        .await
    }

    /// The names of workspaces and repositories `ids` name.
    pub async fn scope_names(&self, ids: Vec<Uuid>) -> Result<Vec<(Uuid, String)>, StoreError> {
        self.run(move |conn| {
            async move {
                let ids: Vec<SqlUuid> = ids.into_iter().map(SqlUuid).collect();
                let ws = workspaces::table
                    .filter(workspaces::id.eq_any(ids.clone()))
                    .select((workspaces::id, workspaces::name));
                let rs = repos::table
                    .filter(repos::id.eq_any(ids))
                    .select((repos::id, repos::name));
                Ok(with_conn!(&mut *conn, |c| {
                    let mut names: Vec<(Uuid, String)> = ws.load(c).await?;
                    names.extend(rs.load::<(Uuid, String)>(c).await?);
                    Ok::<_, diesel::result::Error>(names)
                })?)
            }
            .boxed()
        })
        .await
    }

    /// Applies `changes` to live policy `id` and writes its audit event;
    /// false, writing nothing, if it is gone.
    pub async fn update_policy(
        &self,
        id: Uuid,
        changes: PolicyChanges,
        event: NewEvent,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let live = policies::table
                        .filter(policies::id.eq(SqlUuid(id)))
                        .filter(policies::deleted_at.is_null());
                    let changed = diesel::update(live).set(&changes).execute(c).await?;
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

    /// Marks live policy `id` deleted (by whom and when) with its audit
    /// event; false if it is gone.
    pub async fn delete_policy(
        &self,
        id: Uuid,
        by: Uuid,
        at: DateTime<Utc>,
        event: NewEvent,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let live = policies::table
                        .filter(policies::id.eq(SqlUuid(id)))
                        .filter(policies::deleted_at.is_null());
                    let changed = diesel::update(live)
                        .set((
                            policies::deleted_at.eq(Some(SqlTime(at))),
                            policies::updated_by.eq(SqlUuid(by)),
                            policies::updated_at.eq(SqlTime(at)),
                        ))
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

    /// Records a check's findings in one transaction.
    pub async fn record_findings(&self, findings: Findings) -> Result<(), StoreError> {
        self.run(move |conn| {
            async move {
                // One row at a time: SQLite takes no multi-row insert with
                // diesel's default values.
                write_tx!(&mut *conn, |c| {
                    for row in &findings.violations {
                        diesel::insert_into(policy_violations::table)
                            .values(row)
                            .execute(c)
                            .await?;
                    }
                    for row in &findings.alerts {
                        diesel::insert_into(policy_alerts::table)
                            .values(row)
                            .execute(c)
                            .await?;
                    }
                    for row in &findings.events {
                        diesel::insert_into(system_events::table)
                            .values(row)
                            .execute(c)
                            .await?;
                    }
                    for row in &findings.deliveries {
                        diesel::insert_into(webhook_deliveries::table)
                            .values(row)
                            .execute(c)
                            .await?;
                    }
                    crate::write_usage!(&findings.usage, |q| q.execute(c).await);
                    Ok(())
                })
            }
            .boxed()
        })
        .await
    }

    /// A page of violations (or alerts), newest first, and how many match.
    pub async fn list_violations(
        &self,
        filter: ViolationFilter,
    ) -> Result<(Vec<(ViolationRow, ViolationNames)>, i64), StoreError> {
        self.run(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| {
                    let total = violations_query!(&filter)
                        .count()
                        .get_result::<i64>(c)
                        .await?;
                    let rows = violations_query!(&filter)
                        .order((
                            policy_violations::created_at.desc(),
                            policy_violations::id.desc(),
                        ))
                        .limit(filter.take)
                        .offset(filter.skip)
                        .select((
                            (
                                policy_violations::id,
                                policy_violations::policy_id,
                                policy_violations::created_at,
                                policy_violations::explanation,
                                policy_violations::conversation_id,
                                policy_violations::repo_id,
                                policy_violations::user_id,
                                policy_violations::ai_llm_id,
                                policy_violations::severity,
                                policy_violations::block,
                                policy_violations::llm_type,
                                policy_violations::llm_model,
                                policy_violations::host,
                            ),
                            (
                                policies::name,
                                repos::name,
                                users::name,
                                users::last_name,
                                ai_llms::name.nullable(),
                                policy_alerts::id.nullable(),
                                policy_alerts::message.nullable(),
                                policy_alerts::created_at.nullable(),
                            ),
                        ))
                        .load::<(ViolationRow, ViolationNames)>(c)
                        .await?;
                    Ok::<_, diesel::result::Error>((rows, total))
                })?)
            }
            .boxed()
        })
        .await
    }
}
