//! Idempotency keys: written with the create they answer, found by a
//! retry, swept when expired.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::schema::idempotency_keys;
use super::types::{SqlTime, SqlUuid};
use super::{Store, StoreError};
use crate::{with_conn, write_tx};

/// Deletes an expired row holding the same caller and key as `key`: run
/// before `key` is written, so an old key can be used again.
#[diesel::dsl::auto_type(no_type_alias)]
pub(crate) fn expired_key(key: &NewIdempotencyKey) -> _ {
    let user_id: SqlUuid = key.user_id;
    let name: String = key.key.clone();
    let now: SqlTime = key.created_at;
    diesel::dsl::delete(
        idempotency_keys::table.filter(
            idempotency_keys::user_id
                .eq(user_id)
                .and(idempotency_keys::key.eq(name))
                .and(idempotency_keys::expires_at.le(now)),
        ),
    )
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

impl Store {
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
}
