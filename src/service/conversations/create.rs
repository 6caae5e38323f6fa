//! Creating a conversation: the rule table of `CreateConversation`
//! (README "Rules"), in its order, and the write of the conversation with its
//! audit event (and the caller's idempotency key), all or nothing.
//!
//! For speed, a caller with an API token is authenticated by the same
//! statement that applies the other rules and writes (the rules are SQL
//! conditions, named and in their order in
//! [`crate::store::conversations::RULES`]): one round trip on PostgreSQL.
//! That is why this operation takes the caller's [`Credentials`] rather than
//! an authenticated caller.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Conversation;
use crate::auth::hash_token;
use crate::error::ApiError;
use crate::service::audit;
use crate::service::auth::touch_token;
use crate::service::idempotency::{
    CREATE_FAILED, IdempotencyKey, create_fingerprint, encode_reply,
};
use crate::service::{Credentials, RequestContext, Service};
use crate::store::StoreError;
use crate::store::conversations::{Created, Creator, KeyFor, NewCreate, Refusal};
use crate::store::idempotency::NewIdempotencyKey;
use crate::store::types::{SqlJson, SqlTime, SqlUuid, now};

/// `CreateConversation`'s input.
#[derive(Debug, Clone)]
pub struct CreateConversation {
    /// The repository the conversation is about.
    pub repo_id: Uuid,
    /// Makes retries safe: the same key replays the first reply.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// What a refusal of [`crate::store::conversations::RULES`] tells the caller.
fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Unauthenticated => ApiError::Unauthenticated,
        // Ids from other tenants reveal nothing.
        Refusal::RepositoryNotFound => ApiError::NotFound("Repository not found".into()),
        Refusal::NoWorkspace => {
            ApiError::FailedPrecondition("Repository does not belong to a workspace".into())
        }
        Refusal::RepositoryDisabled => {
            ApiError::FailedPrecondition("Repository is disabled".into())
        }
        Refusal::NoAccess => {
            ApiError::PermissionDenied("Insufficient permissions for this workspace".into())
        }
    }
}

impl Service {
    /// Creates a conversation on a repository (rules 1 to 5 in order; `input`
    /// is the adapter's parse, whose error is told only after rule 1).
    pub async fn create_conversation(
        &self,
        credentials: &Credentials,
        input: Result<CreateConversation, ApiError>,
        ctx: &RequestContext,
    ) -> Result<Conversation, ApiError> {
        // 1 and 2. With a well-formed request, the token is checked by the
        // statement that writes.
        let input = self.parsed(credentials, input).await?;
        let token = credentials.token()?;
        let known = if let Some(user_id) = self.jwt_subject(token)? {
            Some(self.user_caller(user_id).await?)
        } else if input.idempotency_key.is_some() {
            // A key is the caller's own: they must be known before it is read.
            Some(self.authenticate(credentials).await?)
        } else {
            None
        };
        let who = match &known {
            Some(caller) => Creator::User(SqlUuid(caller.user_id)),
            None => Creator::Token(hash_token(token)),
        };
        let fingerprint = create_fingerprint(input.repo_id);
        if let (Some(key), Some(caller)) = (&input.idempotency_key, &known)
            && let Some(reply) = self.replay(caller, key, &fingerprint).await?
        {
            return Ok(reply);
        }
        let id = Uuid::now_v7();
        let at = now();
        let new = NewCreate {
            who,
            repo_id: SqlUuid(input.repo_id),
            id: SqlUuid(id),
            event_id: SqlUuid(Uuid::now_v7()),
            at: SqlTime(at),
            event_data: SqlJson(audit::data(
                [("repoId", input.repo_id.to_string().into())],
                ctx,
            )),
        };
        let replay_with = input.idempotency_key.clone().zip(known);
        let keyed = input.idempotency_key.is_some();
        let key = replay_with.clone().map(|(key, caller)| {
            let ttl = self.idempotency_ttl;
            Box::new(move |created: &Created| NewIdempotencyKey {
                user_id: SqlUuid(caller.user_id),
                key: key.as_str().to_owned(),
                fingerprint: fingerprint.to_vec(),
                conversation_id: SqlUuid(id),
                reply: encode_reply(&reply(id, input.repo_id, at, created)),
                created_at: SqlTime(at),
                expires_at: SqlTime(at + ttl),
            }) as KeyFor
        });
        let created = match self.store.create_conversation(new, key).await {
            Ok(Ok(created)) => created,
            Ok(Err(refusal)) => return Err(refused(refusal)),
            // A racing retry (here or on another replica) wrote the key first.
            Err(StoreError::Conflict(_)) if replay_with.is_some() => {
                let (key, caller) = replay_with.expect("checked");
                return self
                    .replay(&caller, &key, &fingerprint)
                    .await?
                    .ok_or_else(|| ApiError::Internal {
                        public: CREATE_FAILED,
                        detail: "idempotency key conflict without a stored key".into(),
                    });
            }
            Err(e) => return Err(ApiError::from_store(CREATE_FAILED)(e)),
        };
        if let Some((token_id, last_used_at)) = created.token {
            touch_token(&self.store, token_id, last_used_at);
        }
        self.metrics.conversation_created();
        tracing::info!(conversation_id = %id, repo_id = %input.repo_id,
            request_id = %ctx.request_id, transport = ctx.transport.as_str(),
            idempotency_key = keyed, "conversation created");
        Ok(reply(id, input.repo_id, at, &created))
    }
}

/// The reply to a create: the conversation as written, with its repository's
/// name and its creator.
fn reply(id: Uuid, repo_id: Uuid, at: DateTime<Utc>, created: &Created) -> Conversation {
    Conversation {
        id,
        org_id: created.org_id,
        workspace_id: created.workspace_id,
        repo_id,
        created_by: created.user_id,
        title: None,
        tokens_in: 0,
        tokens_out: 0,
        created_at: at,
        last_updated_at: at,
        deleted_at: None,
        repo_name: created.repo_name.clone(),
        creator_name: created.name.clone(),
        creator_last_name: created.last_name.clone(),
        creator_email: created.email.clone(),
    }
}
