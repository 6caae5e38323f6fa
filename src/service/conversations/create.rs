//! Creating a conversation: the rule table of `CreateConversation`
//! (README "Rules"), in its order, and the write of the conversation with its
//! audit event (and the caller's idempotency key), all or nothing.
//!
//! For speed, a caller with an API token is authenticated by the same query
//! that finds the repository (one round trip instead of two); the rules still
//! apply in their order, on what that query found. That is why this operation
//! takes the caller's [`Credentials`] rather than an authenticated caller.

use uuid::Uuid;

use super::Conversation;
use crate::auth::hash_token;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::audit::{self, Action, Context, Scope};
use crate::service::auth::check_token;
use crate::service::idempotency::{
    CREATE_FAILED, IdempotencyKey, create_fingerprint, encode_reply,
};
use crate::service::{Credentials, RequestContext, Service};
use crate::store::StoreError;
use crate::store::conversations::{CreatePlan, Creator, NewConversation, RepoAccess};
use crate::store::idempotency::NewIdempotencyKey;
use crate::store::types::{SqlTime, SqlUuid, now};

/// `CreateConversation`'s input.
#[derive(Debug, Clone)]
pub struct CreateConversation {
    /// The repository the conversation is about.
    pub repo_id: Uuid,
    /// Makes retries safe: the same key replays the first reply.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Rule 3: the repository exists, is not deleted (nor its workspace), and
/// belongs to the caller's organization; anything else is "not found", so
/// ids from other tenants reveal nothing.
pub fn repository_in_reach(
    caller: &Caller,
    repo: Option<RepoAccess>,
) -> Result<RepoAccess, ApiError> {
    repo.filter(|r| {
        r.org_id == caller.org_id && r.deleted_at.is_none() && r.workspace_deleted_at.is_none()
    })
    .ok_or_else(|| ApiError::NotFound("Repository not found".into()))
}

/// Rule 4: the repository belongs to a workspace and is enabled; returns
/// the workspace.
pub fn repository_usable(repo: &RepoAccess) -> Result<Uuid, ApiError> {
    let Some(workspace_id) = repo.workspace_id else {
        return Err(ApiError::FailedPrecondition(
            "Repository does not belong to a workspace".into(),
        ));
    };
    if repo.disabled_at.is_some() {
        return Err(ApiError::FailedPrecondition(
            "Repository is disabled".into(),
        ));
    }
    Ok(workspace_id)
}

/// Rule 5: any access to the repository's workspace, or organization
/// administrator.
pub fn may_create_conversation(caller: &Caller, repo: &RepoAccess) -> Result<(), ApiError> {
    if repo.access.is_none() && !caller.role.is_org_admin() {
        return Err(ApiError::PermissionDenied(
            "Insufficient permissions for this workspace".into(),
        ));
    }
    Ok(())
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
        // 1 and 2. With a well-formed request, the token and the repository
        // (with the caller's membership) come back from one query.
        let input = match input {
            Ok(input) => input,
            Err(invalid) => {
                self.authenticate(credentials).await?;
                return Err(invalid);
            }
        };
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
            Some(caller) => Creator::User(caller.user_id),
            None => Creator::Token(hash_token(token)),
        };
        let fingerprint = create_fingerprint(input.repo_id);
        if let (Some(key), Some(caller)) = (&input.idempotency_key, &known)
            && let Some(reply) = self.replay(caller, key, &fingerprint).await?
        {
            return Ok(reply);
        }
        let replay_with = input.idempotency_key.clone().zip(known.clone());
        let keyed = input.idempotency_key.is_some();
        let (store, ctx_owned, ttl) = (self.store.clone(), ctx.clone(), self.idempotency_ttl);
        let created = self
            .store
            .create_conversation(who, input.repo_id, move |owner, repo| {
                let caller = match known {
                    Some(caller) => caller,
                    None => check_token(&store, owner)?,
                };
                let mut plan = plan_create(&caller, repo, &ctx_owned)?;
                plan.key = input.idempotency_key.map(|key| NewIdempotencyKey {
                    user_id: SqlUuid(caller.user_id),
                    key: key.as_str().to_owned(),
                    fingerprint: fingerprint.to_vec(),
                    conversation_id: plan.conversation.id,
                    reply: encode_reply(&plan.reply),
                    created_at: plan.conversation.created_at,
                    expires_at: SqlTime(plan.conversation.created_at.0 + ttl),
                });
                Ok(plan)
            })
            .await;
        let reply = match (created, replay_with) {
            (Ok(outcome), _) => outcome?,
            // A racing retry (here or on another replica) wrote the key first.
            (Err(StoreError::Conflict(_)), Some((key, caller))) => {
                return self
                    .replay(&caller, &key, &fingerprint)
                    .await?
                    .ok_or_else(|| ApiError::Internal {
                        public: CREATE_FAILED,
                        detail: "idempotency key conflict without a stored key".into(),
                    });
            }
            (Err(e), _) => return Err(ApiError::from_store(CREATE_FAILED)(e)),
        };
        self.metrics.conversation_created();
        tracing::info!(conversation_id = %reply.id, repo_id = %input.repo_id,
            request_id = %ctx.request_id, transport = ctx.transport.as_str(),
            idempotency_key = keyed, "conversation created");
        Ok(reply)
    }
}

/// Rules 3 to 5 for an authenticated caller, in order, and what to write if
/// they allow it: the conversation, its audit event and the reply.
fn plan_create(
    caller: &Caller,
    repo: Option<RepoAccess>,
    ctx: &RequestContext,
) -> Result<CreatePlan<Conversation>, ApiError> {
    let repo = repository_in_reach(caller, repo)?;
    let workspace_id = repository_usable(&repo)?;
    may_create_conversation(caller, &repo)?;
    let id = Uuid::now_v7();
    let at = now();
    let conversation = NewConversation {
        id: SqlUuid(id),
        org_id: SqlUuid(repo.org_id),
        workspace_id: SqlUuid(workspace_id),
        repo_id: SqlUuid(repo.id),
        created_by: SqlUuid(caller.user_id),
        title: None,
        tokens_in: 0,
        tokens_out: 0,
        created_at: SqlTime(at),
        last_updated_at: SqlTime(at),
    };
    let mut data = serde_json::Map::new();
    data.insert("repoId".into(), repo.id.to_string().into());
    let scope = Scope {
        org_id: repo.org_id,
        workspace_id: Some(workspace_id),
        user_id: caller.user_id,
    };
    let event = audit::event(
        scope,
        Context::Conversation,
        id,
        Action::Created,
        data,
        ctx,
        at,
    );
    let reply = Conversation {
        id,
        org_id: repo.org_id,
        workspace_id,
        repo_id: repo.id,
        created_by: caller.user_id,
        title: None,
        tokens_in: 0,
        tokens_out: 0,
        created_at: at,
        last_updated_at: at,
        deleted_at: None,
        repo_name: repo.name,
        creator_name: caller.name.clone(),
        creator_last_name: caller.last_name.clone(),
        creator_email: caller.email.clone(),
    };
    Ok(CreatePlan {
        conversation,
        event,
        key: None,
        reply,
    })
}
