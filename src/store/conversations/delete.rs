//! Deleting a conversation, softly or for good, with its audit event.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;

use super::{ConversationFilter, ConversationRow, NewEvent, matching};
use crate::store::schema::{conversations, repos, system_events, users};
use crate::store::types::{SqlTime, SqlUuid, now};
use crate::store::{Store, StoreError};
use crate::write_tx;

impl Store {
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
                        .select(ConversationRow::as_select())
                        .first(c)
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
                            .set(conversations::deleted_at.eq(SqlTime(now())))
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
