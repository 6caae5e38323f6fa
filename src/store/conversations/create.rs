//! Creating a conversation: the rule table of `CreateConversation` (README
//! "Rules") and the write, as one statement.
//!
//! The rules are SQL conditions over one lookup (the caller by token hash or
//! by user id, the repository, its workspace and the caller's membership),
//! named and in their order in [`RULES`], the one place they are written:
//! the lookup returns which rule refused, if any, and both backends run it.
//!
//! - PostgreSQL: one data-modifying statement, the lookup with the rules
//!   and the INSERTs of the conversation and its audit event behind them, in
//!   one round trip (the real limit of a create: nothing is written unless no
//!   rule refuses, all or nothing as any statement). With an idempotency key
//!   (whose row holds the reply, known only after the lookup), or behind a
//!   transaction-mode pooler, it runs in a transaction opened in the same
//!   write and the key's rows follow before `COMMIT`.
//! - SQLite: the lookup with the rules, then the rows, in one job on the
//!   writer thread ([`super::super::writer`]): a savepoint in the write
//!   transaction of the jobs waiting with it, in its turn at the write gate.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment};
use diesel::serialize::ToSql;
use diesel::sql_types::{Binary, HasSqlType, Integer, Nullable, Text, Untyped};
use diesel::{OptionalExtension as _, QueryResult, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection as _};
use futures_util::FutureExt as _;
use uuid::Uuid;

use crate::domain::OrgRole;
use crate::store::idempotency::{NewIdempotencyKey, expired_key};
use crate::store::prepared::Keyed;
use crate::store::schema::{conversations, idempotency_keys, system_events};
use crate::store::types::{DbJson, DbTime, DbUuid, SqlJson, SqlTime, SqlUuid};
use crate::store::{Conn, Store, StoreError};

use super::{NewConversation, NewEvent};

/// Who creates a conversation: the holder of an API token (by its SHA-256),
/// or a user already authenticated by id (a JWT's subject, or a caller whose
/// idempotency key had to be read first).
#[derive(Debug, Clone, Copy)]
pub enum Creator {
    Token([u8; 32]),
    User(SqlUuid),
}

/// Why a create was refused: the rule that held first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Rule 1: no such token, revoked or expired, or its user disabled.
    Unauthenticated,
    /// Rule 3: no such repository in the caller's organization (or it or its
    /// workspace is deleted).
    RepositoryNotFound,
    /// Rule 4: the repository belongs to no workspace.
    NoWorkspace,
    /// Rule 4: the repository is disabled.
    RepositoryDisabled,
    /// Rule 5: no access to the workspace, and not an organization
    /// administrator.
    NoAccess,
}

/// A rule: what it refuses, and when, as an SQL condition over the lookup's
/// tables (`t` the token, `u` its user, `r` the repository, `w` its
/// workspace, `m` the caller's membership there; any may be missing) and
/// `$now`.
pub struct Rule {
    pub refusal: Refusal,
    pub when: &'static str,
}

/// The rules of `CreateConversation`, in their order (README "Rules"; rule 2,
/// a well-formed request, is the adapters' parse). The first that holds
/// refuses; none holding, the conversation is written. `$admins` stands for
/// the organization roles that reach every workspace
/// ([`OrgRole::is_org_admin`]).
pub const RULES: [Rule; 5] = [
    Rule {
        refusal: Refusal::Unauthenticated,
        when: "u.id IS NULL OR t.revoked_at IS NOT NULL OR t.expires_at <= $now \
               OR u.disabled_at IS NOT NULL",
    },
    Rule {
        refusal: Refusal::RepositoryNotFound,
        when: "r.id IS NULL OR r.org_id <> u.org_id OR r.deleted_at IS NOT NULL \
               OR w.deleted_at IS NOT NULL",
    },
    Rule {
        refusal: Refusal::NoWorkspace,
        when: "r.workspace_id IS NULL",
    },
    Rule {
        refusal: Refusal::RepositoryDisabled,
        when: "r.disabled_at IS NOT NULL",
    },
    Rule {
        refusal: Refusal::NoAccess,
        when: "m.access IS NULL AND u.org_role NOT IN ($admins)",
    },
];

/// What the lookup found: which rule refused (an index into [`RULES`]), and
/// what the reply and the token's upkeep need.
#[derive(Debug, Clone, QueryableByName)]
pub struct Found {
    #[diesel(sql_type = Nullable<Integer>)]
    refused: Option<i32>,
    /// The token, if the caller came with one.
    #[diesel(sql_type = Nullable<DbUuid>)]
    pub token_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<DbTime>)]
    pub token_last_used_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<DbUuid>)]
    user_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    email: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_name: Option<String>,
    #[diesel(sql_type = Nullable<DbUuid>)]
    org_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<DbUuid>)]
    workspace_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    repo_name: Option<String>,
}

/// A conversation the rules allowed, as written.
#[derive(Debug, Clone)]
pub struct Created {
    pub user_id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub last_name: Option<String>,
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub repo_name: String,
    /// The caller's token and when it was last recorded as used.
    pub token: Option<(Uuid, Option<DateTime<Utc>>)>,
}

impl Found {
    /// The rule that refused, or what was written.
    fn verdict(self) -> Result<Created, Refusal> {
        if let Some(i) = self.refused {
            let rule = usize::try_from(i).ok().and_then(|i| RULES.get(i));
            return Err(rule.map_or(Refusal::Unauthenticated, |r| r.refusal));
        }
        match (
            self.user_id,
            self.email,
            self.org_id,
            self.workspace_id,
            self.repo_name,
        ) {
            (Some(user_id), Some(email), Some(org_id), Some(workspace_id), Some(repo_name)) => {
                Ok(Created {
                    user_id,
                    email,
                    name: self.name,
                    last_name: self.last_name,
                    org_id,
                    workspace_id,
                    repo_name,
                    token: self.token_id.map(|id| (id, self.token_last_used_at)),
                })
            }
            // Unreachable while the rules hold: a row no rule refused has all.
            _ => Err(Refusal::RepositoryNotFound),
        }
    }
}

/// A create's own values: the ids and the time it writes, and its audit
/// event's data.
#[derive(Debug, Clone)]
pub struct NewCreate {
    pub who: Creator,
    pub repo_id: SqlUuid,
    pub id: SqlUuid,
    pub event_id: SqlUuid,
    pub at: SqlTime,
    pub event_data: SqlJson,
}

/// The idempotency key a create stores with its reply, made from what it
/// wrote.
pub type KeyFor = Box<dyn FnOnce(&Created) -> NewIdempotencyKey + Send>;

/// The lookup with the rules, for a kind of caller: one row whatever it
/// finds. `$who` is the token's hash or the user's id.
fn lookup_sql(who: Creator) -> String {
    let admins: Vec<String> = OrgRole::ALL
        .iter()
        .filter(|r| r.is_org_admin())
        .map(|r| format!("'{}'", r.as_str()))
        .collect();
    let refused: String = RULES
        .iter()
        .enumerate()
        .map(|(i, rule)| format!(" WHEN {} THEN {i}", rule.when))
        .collect();
    let caller = match who {
        Creator::Token(_) => {
            "api_tokens t ON t.token_hash = $who LEFT JOIN users u ON u.id = t.user_id"
        }
        Creator::User(_) => "users u ON u.id = $who LEFT JOIN api_tokens t ON false",
    };
    format!(
        "SELECT CASE{refused} END AS refused, t.id AS token_id, \
         t.last_used_at AS token_last_used_at, u.id AS user_id, u.email, u.name, u.last_name, \
         r.org_id, r.workspace_id, r.id AS repo_id, r.name AS repo_name \
         FROM (SELECT 1 AS one) one LEFT JOIN {caller} \
         LEFT JOIN repos r ON r.id = $repo \
         LEFT JOIN workspaces w ON w.id = r.workspace_id \
         LEFT JOIN workspace_members m ON m.workspace_id = r.workspace_id AND m.user_id = u.id"
    )
    .replace("$admins", &admins.join(", "))
}

/// PostgreSQL's one statement: the lookup, then the conversation (`$id`)
/// and its event (`$event_id`, with `$data`) at `$now`, written only if no
/// rule refused.
fn postgres_sql(who: Creator) -> String {
    format!(
        "WITH found AS ({lookup}), \
         conversation AS (INSERT INTO conversations (id, org_id, workspace_id, repo_id, created_by, \
         title, tokens_in, tokens_out, created_at, last_updated_at) \
         SELECT $id, org_id, workspace_id, repo_id, user_id, NULL, 0, 0, $now, $now \
         FROM found WHERE refused IS NULL), \
         event AS (INSERT INTO system_events (id, org_id, workspace_id, user_id, context, \
         context_id, event, json_data, created_at) \
         SELECT $event_id, org_id, workspace_id, user_id, 'conversation', $id, 'created', $data, $now \
         FROM found WHERE refused IS NULL) \
         SELECT refused, token_id, token_last_used_at, user_id, email, name, last_name, org_id, \
         workspace_id, repo_name FROM found",
        lookup = lookup_sql(who)
    )
}

/// A value a create's statement takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    Who,
    Repo,
    Now,
    Id,
    EventId,
    Data,
}

impl Param {
    const ALL: [(&'static str, Param); 6] = [
        // Longer names first: `$event_id` is not `$id`'s.
        ("$event_id", Param::EventId),
        ("$repo", Param::Repo),
        ("$data", Param::Data),
        ("$who", Param::Who),
        ("$now", Param::Now),
        ("$id", Param::Id),
    ];
}

/// A statement's SQL cut at its values: each piece of text, then the value
/// that follows it, if any. Binding each in place lets the backend number
/// them (`$n` on PostgreSQL, `?` on SQLite).
struct Template(Vec<(String, Option<Param>)>);

impl Template {
    fn new(sql: &str) -> Self {
        let mut pieces = Vec::new();
        let mut rest = sql;
        while let Some(at) = rest.find('$') {
            let (text, tail) = rest.split_at(at);
            let (name, param) = Param::ALL
                .into_iter()
                .find(|(name, _)| tail.starts_with(name))
                .expect("every `$` in a create's SQL names a value");
            pieces.push((text.to_owned(), Some(param)));
            rest = &tail[name.len()..];
        }
        pieces.push((rest.to_owned(), None));
        Template(pieces)
    }
}

/// The statements, made once.
struct Statements {
    pg_token: Template,
    pg_user: Template,
    sqlite_token: Template,
    sqlite_user: Template,
}

static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| {
    let token = Creator::Token([0; 32]);
    let user = Creator::User(SqlUuid(Uuid::nil()));
    Statements {
        pg_token: Template::new(&postgres_sql(token)),
        pg_user: Template::new(&postgres_sql(user)),
        sqlite_token: Template::new(&lookup_sql(token)),
        sqlite_user: Template::new(&lookup_sql(user)),
    }
});

/// A create's statement with its values. Unlike diesel's `sql_query`, which
/// is prepared anew every time, it is cached as a prepared statement per
/// connection, [`Keyed`] by the kind of caller ([`CreateByToken`],
/// [`CreateByUser`]): each kind's template is one text on each backend, and
/// a connection is of one backend.
struct CreateQuery<'a> {
    template: &'static Template,
    new: &'a NewCreate,
}

/// The key of the create's statement for a caller by token.
enum CreateByToken {}

/// The key of the create's statement for a caller by user id (a JWT).
enum CreateByUser {}

/// Runs `$run` on the create's statement for `$new`'s kind of caller, from
/// the templates `$token` and `$user`, kept under that kind's key.
macro_rules! keyed_create {
    ($new:expr, $token:expr, $user:expr, |$q:ident| $run:expr) => {{
        let new: &NewCreate = $new;
        match new.who {
            Creator::Token(_) => {
                let $q = Keyed::<CreateByToken, _>::new(CreateQuery {
                    template: $token,
                    new,
                });
                $run
            }
            Creator::User(_) => {
                let $q = Keyed::<CreateByUser, _>::new(CreateQuery {
                    template: $user,
                    new,
                });
                $run
            }
        }
    }};
}

impl Query for CreateQuery<'_> {
    type SqlType = Untyped;
}

impl<DB> QueryFragment<DB> for CreateQuery<'_>
where
    DB: Backend + HasSqlType<Binary> + HasSqlType<DbUuid> + HasSqlType<DbTime> + HasSqlType<DbJson>,
    [u8]: ToSql<Binary, DB>,
    SqlUuid: ToSql<DbUuid, DB>,
    SqlTime: ToSql<DbTime, DB>,
    SqlJson: ToSql<DbJson, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let new = self.new;
        for (text, param) in &self.template.0 {
            out.push_sql(text);
            match param {
                None => {}
                Some(Param::Who) => match &new.who {
                    Creator::Token(hash) => out.push_bind_param::<Binary, [u8]>(&hash[..])?,
                    Creator::User(id) => out.push_bind_param::<DbUuid, _>(id)?,
                },
                Some(Param::Repo) => out.push_bind_param::<DbUuid, _>(&new.repo_id)?,
                Some(Param::Now) => out.push_bind_param::<DbTime, _>(&new.at)?,
                Some(Param::Id) => out.push_bind_param::<DbUuid, _>(&new.id)?,
                Some(Param::EventId) => out.push_bind_param::<DbUuid, _>(&new.event_id)?,
                Some(Param::Data) => out.push_bind_param::<DbJson, _>(&new.event_data)?,
            }
        }
        Ok(())
    }
}

impl Store {
    /// A whole create: the caller (by token hash, or by user id), the
    /// repository and the membership looked up, [`RULES`] applied, and, if
    /// none refused, the conversation and its audit event written (with the
    /// idempotency key `key` makes from them, if any): all or nothing.
    pub async fn create_conversation(
        &self,
        new: NewCreate,
        key: Option<KeyFor>,
    ) -> Result<Result<Created, Refusal>, StoreError> {
        match self.sqlite_writer() {
            Some(writer) => {
                self.write_on(writer, move |c| create_on_sqlite(c, new, key))
                    .await
            }
            None => {
                let begin = (key.is_some() || self.behind_transaction_pooler())
                    .then(|| std::sync::Arc::<str>::from(self.begin_sql()));
                self.run_in_own_transaction(move |conn| {
                    async move {
                        let Conn::Pg(pg) = conn else {
                            return Err(StoreError::Internal(
                                "SQLite creates go to its writer".into(),
                            ));
                        };
                        match begin {
                            None => create_on_postgres(pg, &new).await,
                            Some(begin) => create_in_transaction(pg, &begin, &new, key).await,
                        }
                    }
                    .boxed()
                })
                .await
            }
        }
    }
}

/// The create on PostgreSQL: its one statement, on its own.
async fn create_on_postgres(
    c: &mut AsyncPgConnection,
    new: &NewCreate,
) -> Result<Result<Created, Refusal>, StoreError> {
    Ok(statement(c, new).await?.verdict())
}

/// PostgreSQL's statement with its values.
async fn statement(c: &AsyncPgConnection, new: &NewCreate) -> Result<Found, diesel::result::Error> {
    keyed_create!(new, &STATEMENTS.pg_token, &STATEMENTS.pg_user, |q| q
        .get_result::<Found>(&mut &*c)
        .await)
}

/// The create on PostgreSQL in a transaction of its own, opened by hand in
/// the same write as the statement (diesel's manager would await BEGIN
/// first, a round trip of its own), with the idempotency key's rows after
/// it: every way out ends it, and a connection whose ROLLBACK fails is
/// discarded by `Store::run`, never pooled mid-transaction.
async fn create_in_transaction(
    c: &mut AsyncPgConnection,
    begin: &str,
    new: &NewCreate,
    key: Option<KeyFor>,
) -> Result<Result<Created, Refusal>, StoreError> {
    let c: &AsyncPgConnection = c;
    let written = async {
        let begun = async { (&mut &*c).batch_execute(begin).await };
        let (begun, found) = tokio::join!(biased; begun, statement(c, new));
        begun?;
        let created = match found?.verdict() {
            Ok(created) => created,
            refused => return Ok(refused),
        };
        if let Some(key) = key {
            let key = key(&created);
            expired_key(&key).execute(&mut &*c).await?;
            diesel::insert_into(idempotency_keys::table)
                .values(&key)
                .execute(&mut &*c)
                .await?;
        }
        Ok::<_, StoreError>(Ok(created))
    }
    .await;
    let keep = matches!(written, Ok(Ok(_)));
    crate::store::end_transaction(c, written, keep).await
}

/// The create on SQLite, a job of its writer thread, committed with the
/// jobs waiting beside it (its lookup in the same transaction as its rows).
fn create_on_sqlite(
    c: &mut diesel::SqliteConnection,
    new: NewCreate,
    key: Option<KeyFor>,
) -> Result<Result<Created, Refusal>, StoreError> {
    use diesel::RunQueryDsl as Sync;
    let found: Option<Found> = keyed_create!(
        &new,
        &STATEMENTS.sqlite_token,
        &STATEMENTS.sqlite_user,
        |q| Sync::get_result(q, c).optional()?
    );
    let created = match found.map(Found::verdict) {
        Some(Ok(created)) => created,
        Some(Err(refused)) => return Ok(Err(refused)),
        None => return Err(StoreError::Internal("the lookup found no row".into())),
    };
    let conversation = NewConversation {
        id: new.id,
        org_id: SqlUuid(created.org_id),
        workspace_id: SqlUuid(created.workspace_id),
        repo_id: new.repo_id,
        created_by: SqlUuid(created.user_id),
        title: None,
        tokens_in: 0,
        tokens_out: 0,
        created_at: new.at,
        last_updated_at: new.at,
    };
    let event = NewEvent {
        id: new.event_id,
        org_id: SqlUuid(created.org_id),
        workspace_id: Some(SqlUuid(created.workspace_id)),
        user_id: Some(SqlUuid(created.user_id)),
        context: "conversation".into(),
        context_id: Some(new.id),
        event: "created".into(),
        json_data: Some(new.event_data),
        created_at: new.at,
    };
    let key = key.map(|key| key(&created));
    if let Some(key) = &key {
        Sync::execute(expired_key(key), c)?;
    }
    Sync::execute(
        diesel::insert_into(conversations::table).values(&conversation),
        c,
    )?;
    Sync::execute(diesel::insert_into(system_events::table).values(&event), c)?;
    if let Some(key) = &key {
        Sync::execute(diesel::insert_into(idempotency_keys::table).values(key), c)?;
    }
    Ok(Ok(created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_in_the_lookup_in_its_order() {
        let sql = lookup_sql(Creator::Token([0; 32]));
        let mut at = 0;
        for i in 0..RULES.len() {
            let arm = format!(" THEN {i}");
            let found = sql[at..].find(&arm).expect("every rule has its arm");
            at += found + arm.len();
        }
        assert!(sql.contains("u.org_role NOT IN ('admin', 'owner')"));
        assert!(!sql.contains("$admins"));
    }

    #[test]
    fn templates_bind_every_value_in_place() {
        let t = Template::new("a $who b $event_id c $id d $now");
        let params: Vec<_> = t.0.iter().map(|(_, p)| *p).collect();
        assert_eq!(
            params,
            [
                Some(Param::Who),
                Some(Param::EventId),
                Some(Param::Id),
                Some(Param::Now),
                None
            ]
        );
        assert_eq!(t.0[1].0, " b ");
        let pg = Template::new(&postgres_sql(Creator::User(SqlUuid(Uuid::nil()))));
        for param in [
            Param::Who,
            Param::Repo,
            Param::Now,
            Param::Id,
            Param::EventId,
            Param::Data,
        ] {
            assert!(pg.0.iter().any(|(_, p)| *p == Some(param)), "{param:?}");
        }
    }
}
