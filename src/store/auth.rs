//! Who is calling: API tokens with their users, and users by id.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::schema::{api_tokens, users};
use super::types::{SqlTime, SqlUuid};
use super::{Store, StoreError};
use crate::domain::{Caller, OrgRole};
use crate::with_conn;

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

/// The query of the token whose SHA-256 is `$hash` (`[u8; 32]`), with its
/// user: one indexed lookup.
macro_rules! token_owner {
    ($hash:expr) => {{
        use $crate::store::schema::{api_tokens, users};
        api_tokens::table
            .inner_join(users::table)
            .filter(api_tokens::token_hash.eq($hash.to_vec()))
            .select($crate::store::auth::TokenOwner::as_select())
    }};
}

/// The query of the user whose id is `$id` (an `SqlUuid`).
macro_rules! user_row {
    ($id:expr) => {{
        use $crate::store::schema::users;
        users::table
            .filter(users::id.eq($id))
            .select($crate::store::auth::UserRow::as_select())
    }};
}

pub(crate) use {token_owner, user_row};

/// The caller a user is (whether they may call is rule 1's to judge).
impl From<UserRow> for Caller {
    fn from(user: UserRow) -> Self {
        Caller {
            user_id: user.user_id,
            org_id: user.org_id,
            role: user.org_role,
            email: user.email,
            name: user.name,
            last_name: user.last_name,
        }
    }
}

impl Store {
    /// The token whose SHA-256 is `hash`, with its user; one indexed lookup.
    pub async fn find_token(&self, hash: [u8; 32]) -> Result<Option<TokenOwner>, StoreError> {
        self.run(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| token_owner!(hash)
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
                Ok(with_conn!(&mut *conn, |c| user_row!(SqlUuid(user_id))
                    .first(c)
                    .await
                    .optional())?)
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
}
