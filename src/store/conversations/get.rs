//! Getting one conversation: by a filter (its visibility judged by the
//! database), or, for a prompt, together with the caller behind a
//! credential (visibility then judged by [`ConversationFilter::admits`]).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::create::Creator;
use super::{ConversationFilter, ConversationRow, matching};
use crate::domain::Access;
use crate::store::auth::{TokenOwner, UserRow, token_owner, user_row};
use crate::store::schema::{api_tokens, conversations, repos, users, workspace_members};
use crate::store::types::SqlUuid;
use crate::store::{Conn, Store, StoreError};
use crate::with_conn;

impl Store {
    /// One conversation, if it matches the filter.
    pub async fn get_conversation(
        &self,
        filter: ConversationFilter,
    ) -> Result<Option<ConversationRow>, StoreError> {
        self.read(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| matching!(&filter)
                    .inner_join(repos::table)
                    .inner_join(users::table)
                    .select(ConversationRow::as_select())
                    .first(c)
                    .await
                    .optional())?)
            }
            .boxed()
        })
        .await
    }

    /// What a prompt's first step needs, read together: the holder of a
    /// credential (a token by its hash, or a user by id), and the live
    /// conversation `id` of any organization with the holder's access to its
    /// workspace (the membership joined). The caller's rules, visibility
    /// included, are the service's to apply ([`ConversationFilter::admits`]).
    /// Two statements: pipelined on PostgreSQL (one round trip), in one job
    /// on SQLite, on the caller's task ([`Store::run_here`]: it writes
    /// nothing). On the primary, as the token lookup always is (a revoked
    /// token is refused at once).
    pub async fn find_holder_and_conversation(
        &self,
        who: Creator,
        id: Uuid,
    ) -> Result<HolderAndConversation, StoreError> {
        // Each query is written once; `$first` runs it: awaited on
        // PostgreSQL (the two pipelined), in place on SQLite (the two in one
        // blocking job: one hop to a blocking thread, not two).
        macro_rules! first_async {
            ($q:expr, $c:expr) => {
                diesel_async::RunQueryDsl::first($q, $c).await.optional()
            };
        }
        macro_rules! first_sync {
            ($q:expr, $c:expr) => {
                diesel::RunQueryDsl::first($q, $c).optional()
            };
        }
        /// The holder.
        macro_rules! holder {
            ($c:expr, $first:ident) => {
                match who {
                    Creator::Token(hash) => {
                        $first!(token_owner!(hash), $c).map(|found| found.map(Holder::Token))
                    }
                    Creator::User(user_id) => {
                        $first!(user_row!(user_id), $c).map(|found| found.map(Holder::User))
                    }
                }
            };
        }
        /// The conversation and the holder's membership (the holder's user
        /// id as an SQL condition on `workspace_members.user_id`: a
        /// subquery for a token).
        macro_rules! target {
            ($c:expr, $first:ident) => {{
                macro_rules! joined {
                    ($member:expr) => {
                        $first!(
                            conversations::table
                                .filter(conversations::id.eq(SqlUuid(id)))
                                .filter(conversations::deleted_at.is_null())
                                .inner_join(repos::table)
                                .inner_join(users::table)
                                .left_join(
                                    workspace_members::table.on(workspace_members::workspace_id
                                        .eq(conversations::workspace_id)
                                        .and($member)),
                                )
                                .select((
                                    ConversationRow::as_select(),
                                    workspace_members::access.nullable(),
                                )),
                            $c
                        )
                    };
                }
                match who {
                    Creator::Token(hash) => joined!(
                        workspace_members::user_id.eq_any(
                            api_tokens::table
                                .filter(api_tokens::token_hash.eq(hash.to_vec()))
                                .select(api_tokens::user_id)
                        )
                    ),
                    Creator::User(user_id) => joined!(workspace_members::user_id.eq(user_id)),
                }
            }};
        }
        self.run_here(move |conn| {
            async move {
                let (holder, conversation) = match conn {
                    Conn::Pg(c) => {
                        let c: &diesel_async::AsyncPgConnection = c;
                        let (holder, target) =
                            tokio::join!(async { holder!(&mut &*c, first_async) }, async {
                                target!(&mut &*c, first_async)
                            });
                        (holder?, target?)
                    }
                    Conn::Sqlite(c, _) => {
                        c.spawn_blocking(move |c| {
                            Ok((holder!(&mut *c, first_sync)?, target!(&mut *c, first_sync)?))
                        })
                        .await?
                    }
                };
                Ok(HolderAndConversation {
                    holder,
                    conversation,
                })
            }
            .boxed()
        })
        .await
    }
}

/// Who holds a credential, as found.
#[derive(Debug)]
pub enum Holder {
    Token(TokenOwner),
    User(UserRow),
}

/// What [`Store::find_holder_and_conversation`] found.
#[derive(Debug)]
pub struct HolderAndConversation {
    pub holder: Option<Holder>,
    pub conversation: Option<(ConversationRow, Option<Access>)>,
}
