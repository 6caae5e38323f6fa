//! The one implementation of `flashback.conversation.v1.ConversationService`.
//! gRPC calls arrive here directly; the REST gateway calls the same methods
//! in-process. Every rule is here, in the order the API documents:
//! authenticate, validate, find, check state, authorize, act.

use chrono::{DateTime, SubsecRound as _, Utc};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::jwt::{JwtVerifier, looks_like_jwt};
use crate::auth::{hash_token, parse_bearer};
use crate::domain::{Caller, OrgRole, Transport};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::pb::conversation_service_server::ConversationService;
use crate::pb::{
    self, CreateConversationRequest, CreateConversationResponse, DeleteConversationRequest,
    DeleteConversationResponse, GetConversationRequest, GetConversationResponse,
    ListConversationsRequest, ListConversationsResponse, ListMessagesRequest, ListMessagesResponse,
    PromptConversationRequest, PromptConversationResponse,
};
use crate::provider::{ChatMessage, Completion, Provider, ProviderError};
use crate::store::Store;
use crate::store::StoreError;
use crate::store::conversations::{
    ConversationFilter, ConversationRow, CreatePlan, Creator, NewConversation, NewEvent,
    NewIdempotencyKey, RepoAccess, TokenOwner, UserRow, Visibility,
};
use crate::store::messages::{MessageRow, NewMessage, Turn};
use crate::store::types::{SqlJson, SqlTime, SqlUuid, now};
use tokio::sync::mpsc;

/// The metadata key (and HTTP header) of the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// What a create that fails inside the service says.
const CREATE_FAILED: &str = "Failed to create conversation";

/// The metadata key (and HTTP header) of an idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// How long an idempotency key is remembered by default.
pub const DEFAULT_IDEMPOTENCY_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// How stale `api_tokens.last_used_at` may get before a request refreshes it
/// (a write per request would be a write too many).
const TOKEN_TOUCH_INTERVAL: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// A field the REST gateway could not carry into the proto request (for
/// instance `repoId` given as a number). The gateway attaches it to the request
/// so that it is reported in its place in the rule order, after authentication.
#[derive(Debug, Clone)]
pub struct FieldError(pub String);

/// The service: the store plus the rules.
#[derive(Clone)]
pub struct ConversationApi {
    store: Store,
    jwt: Option<Arc<JwtVerifier>>,
    metrics: Arc<Metrics>,
    draining: Arc<AtomicBool>,
    idempotency_ttl: chrono::TimeDelta,
    provider: Option<Arc<Provider>>,
}

impl ConversationApi {
    /// The service over `store`, accepting JWTs too when `jwt` is given.
    pub fn new(store: Store, jwt: Option<Arc<JwtVerifier>>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            jwt,
            metrics,
            draining: Arc::new(AtomicBool::new(false)),
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
            provider: None,
        }
    }

    /// The model provider prompts go to.
    pub fn with_provider(mut self, provider: Option<Provider>) -> Self {
        self.provider = provider.map(Arc::new);
        self
    }

    /// How long idempotency keys are remembered.
    pub fn with_idempotency_ttl(mut self, ttl: chrono::TimeDelta) -> Self {
        self.idempotency_ttl = ttl;
        self
    }

    /// Marks the service as shutting down: readiness fails from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The store, for what serves beside the rpcs (metrics, health).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether requests can be served: not shutting down, and the database
    /// answers. What readiness reports.
    pub async fn ready(&self) -> Result<(), ApiError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(ApiError::Unavailable {
                detail: "shutting down".into(),
            });
        }
        self.store
            .ping()
            .await
            .map_err(ApiError::from_store("Not ready"))
    }

    /// Rule 1: a valid bearer credential (an API token, or a JWT when they
    /// are configured) of an enabled user.
    async fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, ApiError> {
        let token = bearer(metadata)?;
        if let Some(user_id) = self.jwt_subject(token)? {
            return self.user_caller(user_id).await;
        }
        let owner = self
            .store
            .find_token(hash_token(token))
            .await
            .map_err(ApiError::from_store("Failed to authenticate"))?;
        check_token(&self.store, owner)
    }

    /// The user a JWT speaks for, if JWTs are configured and `token` is one;
    /// a JWT that fails any check is refused (the reason goes to the log only).
    fn jwt_subject(&self, token: &str) -> Result<Option<Uuid>, ApiError> {
        match &self.jwt {
            Some(verifier) if looks_like_jwt(token) => match verifier.verify(token) {
                Ok(user_id) => Ok(Some(user_id)),
                Err(why) => {
                    tracing::debug!(reason = %why, "JWT refused");
                    Err(ApiError::Unauthenticated)
                }
            },
            _ => Ok(None),
        }
    }

    /// Rule 1 for a JWT's subject: an existing, enabled user.
    async fn user_caller(&self, user_id: Uuid) -> Result<Caller, ApiError> {
        let user = self
            .store
            .find_user(user_id)
            .await
            .map_err(ApiError::from_store("Failed to authenticate"))?
            .ok_or(ApiError::Unauthenticated)?;
        enabled_caller(user)
    }

    /// Rules 1 and 2 of every rpc, in that order: the caller's credentials,
    /// then any field the gateway could not carry into the request.
    async fn begin<T>(&self, request: &Request<T>) -> Result<Caller, ApiError> {
        let caller = self.authenticate(request.metadata()).await?;
        if let Some(FieldError(message)) = request.extensions().get::<FieldError>() {
            return Err(ApiError::InvalidArgument(message.clone()));
        }
        Ok(caller)
    }

    async fn create(
        &self,
        request: &Request<CreateConversationRequest>,
        ctx: &CallContext,
    ) -> Result<CreateConversationResponse, ApiError> {
        let metadata = request.metadata();
        // 1 and 2. Who is calling, and what they ask for. With a well-formed
        // request, the token and the repository (with the caller's membership)
        // come back from one query; the rules still apply in their order.
        let repo_id = match request.extensions().get::<FieldError>() {
            Some(FieldError(message)) => Err(ApiError::InvalidArgument(message.clone())),
            None => parse_uuid_field("repoId", &request.get_ref().repo_id),
        };
        let (repo_id, key) = match (repo_id, idempotency_key(metadata)) {
            (Ok(repo_id), Ok(key)) => (repo_id, key),
            (Err(invalid), _) | (_, Err(invalid)) => {
                self.authenticate(metadata).await?;
                return Err(invalid);
            }
        };
        let token = bearer(metadata)?;
        let mut who = Creator::Token(hash_token(token));
        let mut known = None;
        if let Some(user_id) = self.jwt_subject(token)? {
            known = Some(self.user_caller(user_id).await?);
        } else if key.is_some() {
            // A key is the caller's own: they must be known before it is read.
            known = Some(self.authenticate(metadata).await?);
        }
        if let Some(caller) = &known {
            who = Creator::User(caller.user_id);
        }
        let fingerprint = create_fingerprint(repo_id);
        if let (Some(key), Some(caller)) = (&key, &known)
            && let Some(reply) = self.replay(caller.user_id, key, &fingerprint).await?
        {
            return Ok(reply);
        }
        let (store, transport, request_id) =
            (self.store.clone(), ctx.transport, ctx.request_id.clone());
        let ttl = self.idempotency_ttl;
        let replay_key = key.clone().zip(known.as_ref().map(|c| c.user_id));
        let keyed = key.is_some();
        let created = self
            .store
            .create_conversation(who, repo_id, move |owner, repo| {
                let caller = match known {
                    Some(caller) => caller,
                    None => check_token(&store, owner)?,
                };
                let user_id = caller.user_id;
                let (conversation, event, row) = plan_create(caller, repo, transport, request_id)?;
                let reply = CreateConversationResponse {
                    conversation_id: row.id.to_string(),
                    conversation: Some(conversation_pb(row)),
                };
                let key = key.map(|key| NewIdempotencyKey {
                    user_id: SqlUuid(user_id),
                    key,
                    fingerprint: fingerprint.to_vec(),
                    conversation_id: conversation.id,
                    reply: prost::Message::encode_to_vec(&reply),
                    created_at: conversation.created_at,
                    expires_at: SqlTime(conversation.created_at.0 + ttl),
                });
                Ok(CreatePlan {
                    conversation,
                    event,
                    key,
                    reply,
                })
            })
            .await;
        let reply = match (created, replay_key) {
            (Ok(outcome), _) => outcome?,
            // A racing retry (here or on another replica) wrote the key first.
            (Err(StoreError::Conflict(_)), Some((key, user_id))) => {
                return self
                    .replay(user_id, &key, &fingerprint)
                    .await?
                    .ok_or_else(|| ApiError::Internal {
                        public: CREATE_FAILED,
                        detail: "idempotency key conflict without a stored key".into(),
                    });
            }
            (Err(e), _) => return Err(ApiError::from_store(CREATE_FAILED)(e)),
        };
        self.metrics.conversation_created();
        tracing::info!(conversation_id = %reply.conversation_id, repo_id = %repo_id,
            request_id = %ctx.request_id, transport = ctx.transport.as_str(),
            idempotency_key = keyed, "conversation created");
        Ok(reply)
    }

    /// The reply first sent for the caller's idempotency key `key`, if the
    /// key is live; 409 if it was used for a different request.
    async fn replay(
        &self,
        user_id: Uuid,
        key: &str,
        fingerprint: &[u8; 32],
    ) -> Result<Option<CreateConversationResponse>, ApiError> {
        let Some(stored) = self
            .store
            .find_idempotency_key(user_id, key.to_owned(), Utc::now())
            .await
            .map_err(ApiError::from_store(CREATE_FAILED))?
        else {
            return Ok(None);
        };
        if stored.fingerprint != fingerprint {
            return Err(ApiError::AlreadyExists(
                "Idempotency-Key was already used for a different request".into(),
            ));
        }
        let reply: CreateConversationResponse = prost::Message::decode(stored.reply.as_slice())
            .map_err(|e| ApiError::Internal {
                public: CREATE_FAILED,
                detail: format!("stored idempotent reply: {e}"),
            })?;
        tracing::info!(conversation_id = %reply.conversation_id, "idempotent replay");
        Ok(Some(reply))
    }

    async fn list(
        &self,
        request: &Request<ListConversationsRequest>,
    ) -> Result<ListConversationsResponse, ApiError> {
        let caller = self.begin(request).await?;
        let r = request.get_ref();
        let (take, skip) = page(r.take, r.skip)?;
        let from = parse_time_bound("from", &r.from, Bound::Start)?;
        let until = parse_time_bound("to", &r.to, Bound::End)?;
        let filter = ConversationFilter {
            from,
            until,
            created_by: optional_uuid_field("userId", &r.user_id)?,
            workspace_id: optional_uuid_field("workspaceId", &r.workspace_id)?,
            repo_id: optional_uuid_field("repoId", &r.repo_id)?,
            show_deleted: r.show_deleted,
            ..visible_to(&caller)
        };
        if let (Some(from), Some(until)) = (from, until)
            && from >= until
        {
            // An empty range: nothing was created in it (as with a SQL
            // BETWEEN whose ends are swapped).
            return Ok(ListConversationsResponse::default());
        }
        let (rows, total) = self
            .store
            .list_conversations(filter, take, skip)
            .await
            .map_err(ApiError::from_store("Failed to list conversations"))?;
        Ok(ListConversationsResponse {
            conversations: rows.into_iter().map(conversation_pb).collect(),
            total: u64::try_from(total).unwrap_or_default(),
        })
    }

    async fn get(
        &self,
        request: &Request<GetConversationRequest>,
    ) -> Result<GetConversationResponse, ApiError> {
        let caller = self.begin(request).await?;
        let r = request.get_ref();
        let filter = ConversationFilter {
            id: Some(parse_uuid_field("conversationId", &r.conversation_id)?),
            show_deleted: r.show_deleted,
            ..visible_to(&caller)
        };
        let row = self
            .store
            .get_conversation(filter)
            .await
            .map_err(ApiError::from_store("Failed to get conversation"))?
            .ok_or_else(conversation_not_found)?;
        Ok(GetConversationResponse {
            conversation: Some(conversation_pb(row)),
        })
    }

    async fn delete(
        &self,
        request: &Request<DeleteConversationRequest>,
        ctx: &CallContext,
    ) -> Result<DeleteConversationResponse, ApiError> {
        let caller = self.begin(request).await?;
        let r = request.get_ref();
        let id = parse_uuid_field("conversationId", &r.conversation_id)?;
        // Who may delete is exactly who may see: the creator, administrators
        // of its workspace, organization administrators.
        let filter = ConversationFilter {
            id: Some(id),
            show_deleted: true,
            ..visible_to(&caller)
        };
        let hard = r.hard_delete;
        let (user_id, transport, request_id) =
            (caller.user_id, ctx.transport, ctx.request_id.clone());
        let deleted = self
            .store
            .delete_conversation(filter, hard, move |row| NewEvent {
                id: SqlUuid(Uuid::now_v7()),
                org_id: SqlUuid(row.org_id),
                workspace_id: Some(SqlUuid(row.workspace_id)),
                user_id: Some(SqlUuid(user_id)),
                context: "conversation".into(),
                context_id: Some(SqlUuid(row.id)),
                event: "deleted".into(),
                json_data: Some(SqlJson(serde_json::json!({
                    "hardDelete": hard,
                    "repoId": row.repo_id,
                    "transport": transport.as_str(),
                    "requestId": request_id,
                }))),
                created_at: SqlTime(now()),
            })
            .await
            .map_err(ApiError::from_store("Failed to delete conversation"))?;
        if !deleted {
            return Err(conversation_not_found());
        }
        tracing::info!(conversation_id = %id, hard, user_id = %caller.user_id,
            request_id = %ctx.request_id, "conversation deleted");
        Ok(DeleteConversationResponse {})
    }
}

impl ConversationApi {
    /// The conversation `id` as `caller` may see it, not deleted.
    async fn visible_conversation(
        &self,
        caller: &Caller,
        id: Uuid,
        failed: &'static str,
    ) -> Result<ConversationRow, ApiError> {
        let filter = ConversationFilter {
            id: Some(id),
            show_deleted: false,
            ..visible_to(caller)
        };
        self.store
            .get_conversation(filter)
            .await
            .map_err(ApiError::from_store(failed))?
            .ok_or_else(conversation_not_found)
    }

    /// Everything a prompt does before the model is asked: the rules, in
    /// order, and the context to send.
    async fn prepare_prompt(
        &self,
        request: &Request<PromptConversationRequest>,
    ) -> Result<PreparedPrompt, ApiError> {
        let caller = self.begin(request).await?;
        let r = request.get_ref();
        let id = parse_uuid_field("conversationId", &r.conversation_id)?;
        // Kept verbatim; only an empty prompt or model is refused (as the
        // OpenAPI document's minLength says).
        let prompt = r.prompt.as_str();
        if prompt.is_empty() {
            return Err(ApiError::InvalidArgument("prompt must not be empty".into()));
        }
        let model = r.model.as_str();
        if model.is_empty() {
            return Err(ApiError::InvalidArgument("model is required".into()));
        }
        let provider = self.provider.clone().ok_or_else(|| {
            ApiError::Unimplemented("No model provider is configured on this service".into())
        })?;
        if !provider.allows(model) {
            return Err(ApiError::InvalidArgument(
                "model is not one of the allowed models".into(),
            ));
        }
        // Who may prompt is who may see (their own; administrators, any in
        // reach), and only while they can read the workspace.
        let conversation = self
            .visible_conversation(&caller, id, PROMPT_FAILED)
            .await?;
        if !caller.role.is_org_admin()
            && self
                .store
                .membership(conversation.workspace_id, caller.user_id)
                .await
                .map_err(ApiError::from_store(PROMPT_FAILED))?
                .is_none()
        {
            return Err(ApiError::PermissionDenied(
                "Insufficient permissions for this workspace".into(),
            ));
        }
        let (history, total) = self
            .store
            .list_messages(id, MAX_CONTEXT_MESSAGES, 0)
            .await
            .map_err(ApiError::from_store(PROMPT_FAILED))?;
        let history = if total > MAX_CONTEXT_MESSAGES {
            // The latest turns, oldest first.
            self.store
                .list_messages(id, MAX_CONTEXT_MESSAGES, total - MAX_CONTEXT_MESSAGES)
                .await
                .map_err(ApiError::from_store(PROMPT_FAILED))?
                .0
        } else {
            history
        };
        let mut turns: Vec<ChatMessage> = history
            .into_iter()
            .map(|m| ChatMessage {
                role: m.role,
                content: m.content,
            })
            .collect();
        turns.push(ChatMessage {
            role: "user".into(),
            content: prompt.to_owned(),
        });
        Ok(PreparedPrompt {
            provider,
            store: self.store.clone(),
            id,
            model: model.to_owned(),
            prompt: prompt.to_owned(),
            turns,
        })
    }

    async fn prompt(
        &self,
        request: &Request<PromptConversationRequest>,
    ) -> Result<PromptConversationResponse, ApiError> {
        let prepared = self.prepare_prompt(request).await?;
        let completion = prepared
            .provider
            .complete(&prepared.model, &prepared.turns)
            .await
            .map_err(provider_error)?;
        prepared.record(completion).await
    }

    /// A prompt whose reply is streamed: the rules first (their refusal is
    /// the rpc's status), then the deltas as the model writes them and, last,
    /// the stored turn. If the caller goes away before the model is done,
    /// nothing is stored; if the model fails, the stream ends with its error
    /// and nothing is stored.
    async fn prompt_stream(
        &self,
        request: &Request<PromptConversationRequest>,
    ) -> Result<mpsc::Receiver<Result<pb::PromptConversationEvent, Status>>, ApiError> {
        use pb::prompt_conversation_event::Event;
        let prepared = self.prepare_prompt(request).await?;
        let (events, receiver) = mpsc::channel(32);
        tokio::spawn(async move {
            let (deltas, mut pieces) = mpsc::channel::<String>(32);
            let forward = {
                let events = events.clone();
                async move {
                    // Until the model is done; false if the caller left first
                    // (then dropping `pieces` stops the model).
                    loop {
                        let piece = tokio::select! {
                            piece = pieces.recv() => piece,
                            () = events.closed() => return false,
                        };
                        let Some(piece) = piece else { return true };
                        let event = pb::PromptConversationEvent {
                            event: Some(Event::Delta(piece)),
                        };
                        if events.send(Ok(event)).await.is_err() {
                            return false;
                        }
                    }
                }
            };
            let generate = prepared
                .provider
                .stream(&prepared.model, &prepared.turns, deltas);
            let (completion, delivered) = tokio::join!(generate, forward);
            let outcome = match completion {
                Err(ProviderError::Cancelled) => return,
                Ok(_) if !delivered => return,
                Err(e) => Err(Status::from(provider_error(e))),
                Ok(completion) => prepared
                    .record(completion)
                    .await
                    .map(|reply| pb::PromptConversationEvent {
                        event: Some(Event::Done(reply)),
                    })
                    .map_err(Status::from),
            };
            let _ = events.send(outcome).await;
        });
        Ok(receiver)
    }

    async fn messages(
        &self,
        request: &Request<ListMessagesRequest>,
    ) -> Result<ListMessagesResponse, ApiError> {
        const FAILED: &str = "Failed to list messages";
        let caller = self.begin(request).await?;
        let r = request.get_ref();
        let id = parse_uuid_field("conversationId", &r.conversation_id)?;
        let (take, skip) = page(r.take, r.skip)?;
        let conversation = self.visible_conversation(&caller, id, FAILED).await?;
        let (rows, total) = self
            .store
            .list_messages(id, take, skip)
            .await
            .map_err(ApiError::from_store(FAILED))?;
        Ok(ListMessagesResponse {
            messages: rows.into_iter().map(message_pb).collect(),
            title: conversation.title.unwrap_or_default(),
            total: u64::try_from(total).unwrap_or_default(),
        })
    }
}

/// What a prompt failing inside the service says.
const PROMPT_FAILED: &str = "Failed to prompt the conversation";

/// A prompt that passed the rules, ready for the model.
struct PreparedPrompt {
    provider: Arc<Provider>,
    store: Store,
    id: Uuid,
    model: String,
    prompt: String,
    turns: Vec<ChatMessage>,
}

impl PreparedPrompt {
    /// Stores the turn the model completed, and the reply that shows it.
    async fn record(&self, completion: Completion) -> Result<PromptConversationResponse, ApiError> {
        let tokens_in = i64::try_from(completion.tokens_in).unwrap_or(i64::MAX);
        let tokens_out = i64::try_from(completion.tokens_out).unwrap_or(i64::MAX);
        let turn = Turn {
            conversation_id: self.id,
            user: NewMessage {
                id: Uuid::now_v7(),
                role: "user",
                content: self.prompt.clone(),
                model: self.model.clone(),
                token_count: tokens_in,
                metadata: serde_json::json!({}),
            },
            assistant: NewMessage {
                id: Uuid::now_v7(),
                role: "assistant",
                content: completion.content,
                model: completion.model,
                token_count: tokens_out,
                metadata: completion.metadata,
            },
            tokens_in,
            tokens_out,
            title: title_of(&self.prompt),
            at: now(),
        };
        if !self
            .store
            .record_turn(turn.clone())
            .await
            .map_err(ApiError::from_store(PROMPT_FAILED))?
        {
            // Deleted while the model was answering: nothing is kept.
            return Err(conversation_not_found());
        }
        let message = |m: NewMessage| MessageRow {
            id: m.id,
            conversation_id: self.id,
            role: m.role.to_owned(),
            content: m.content,
            model: m.model,
            token_count: m.token_count,
            metadata: m.metadata,
            created_at: turn.at,
        };
        Ok(PromptConversationResponse {
            user_message: Some(message_pb(message(turn.user.clone()))),
            assistant_message: Some(message_pb(message(turn.assistant.clone()))),
            usage: Some(pb::Usage {
                tokens_in: completion.tokens_in,
                tokens_out: completion.tokens_out,
            }),
        })
    }
}

/// A provider failure as the caller sees it.
fn provider_error(e: ProviderError) -> ApiError {
    match e {
        ProviderError::Timeout => ApiError::UpstreamTimeout(e.to_string()),
        ProviderError::UnknownModel => ApiError::InvalidArgument(e.to_string()),
        ProviderError::Failed(_) | ProviderError::Cancelled => ApiError::Upstream(e.to_string()),
    }
}

/// How many earlier messages a prompt sends as context, at most (the latest).
const MAX_CONTEXT_MESSAGES: i64 = 200;

/// A conversation's title from its first prompt: its first non-blank line, at
/// most 80 characters; none for a blank prompt.
fn title_of(prompt: &str) -> Option<String> {
    let line = prompt.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut title: String = line.chars().take(80).collect();
    if line.chars().count() > 80 {
        title.push('…');
    }
    Some(title)
}

/// Validated `take` and `skip`.
fn page(take: Option<i64>, skip: Option<i64>) -> Result<(i64, i64), ApiError> {
    let take = match take {
        None => DEFAULT_TAKE,
        Some(t) if (1..=MAX_TAKE).contains(&t) => t,
        Some(_) => {
            return Err(ApiError::InvalidArgument(format!(
                "take must be between 1 and {MAX_TAKE}"
            )));
        }
    };
    let skip = match skip {
        None => 0,
        Some(s) if s >= 0 => s,
        Some(_) => return Err(ApiError::InvalidArgument("skip must be 0 or more".into())),
    };
    Ok((take, skip))
}

/// A stored message as the API shows it.
fn message_pb(row: MessageRow) -> pb::Message {
    pb::Message {
        id: row.id.to_string(),
        conversation_id: row.conversation_id.to_string(),
        role: row.role,
        content: row.content,
        token_count: u64::try_from(row.token_count).unwrap_or_default(),
        model: row.model,
        metadata_json: row.metadata.to_string(),
        created_at: Some(timestamp(row.created_at)),
    }
}

/// Rules 3 to 5 of CreateConversation for an authenticated caller, in order,
/// and what to write if they allow it: the conversation, its audit event and
/// the reply.
fn plan_create(
    caller: Caller,
    repo: Option<RepoAccess>,
    transport: Transport,
    request_id: String,
) -> Result<(NewConversation, NewEvent, ConversationRow), ApiError> {
    // 3. The repository, as the caller's organization sees it.
    let repo = repo
        .filter(|r| {
            r.org_id == caller.org_id && r.deleted_at.is_none() && r.workspace_deleted_at.is_none()
        })
        .ok_or_else(|| ApiError::NotFound("Repository not found".into()))?;
    // 4. Its state.
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
    // 5. The caller's right to it: any membership, or organization admin.
    if repo.access.is_none() && !caller.role.is_org_admin() {
        return Err(ApiError::PermissionDenied(
            "Insufficient permissions for this workspace".into(),
        ));
    }
    // Act: the conversation and its audit event, both or neither.
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
    let event = NewEvent {
        id: SqlUuid(Uuid::now_v7()),
        org_id: SqlUuid(repo.org_id),
        workspace_id: Some(SqlUuid(workspace_id)),
        user_id: Some(SqlUuid(caller.user_id)),
        context: "conversation".into(),
        context_id: Some(SqlUuid(id)),
        event: "created".into(),
        json_data: Some(SqlJson(serde_json::json!({
            "repoId": repo.id,
            "transport": transport.as_str(),
            "requestId": request_id,
        }))),
        created_at: SqlTime(at),
    };
    let reply = ConversationRow {
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
        creator_name: caller.name,
        creator_last_name: caller.last_name,
        creator_email: caller.email,
    };
    Ok((conversation, event, reply))
}

/// The default and largest page sizes of a list.
pub const DEFAULT_TAKE: i64 = 50;
pub const MAX_TAKE: i64 = 100;

fn conversation_not_found() -> ApiError {
    ApiError::NotFound("Conversation not found".into())
}

/// The conversations `caller` may see (and delete), before any filter.
fn visible_to(caller: &Caller) -> ConversationFilter {
    let visibility = if caller.role.is_org_admin() {
        Visibility::Organization
    } else {
        Visibility::OwnAndAdministered {
            user_id: caller.user_id,
        }
    };
    ConversationFilter::visible(caller.org_id, visibility)
}

/// A stored conversation as the API shows it.
fn conversation_pb(row: ConversationRow) -> pb::Conversation {
    pb::Conversation {
        id: row.id.to_string(),
        org_id: row.org_id.to_string(),
        workspace_id: row.workspace_id.to_string(),
        repo_id: row.repo_id.to_string(),
        created_by: row.created_by.to_string(),
        title: row.title.unwrap_or_default(),
        tokens_in: u64::try_from(row.tokens_in).unwrap_or_default(),
        tokens_out: u64::try_from(row.tokens_out).unwrap_or_default(),
        created_at: Some(timestamp(row.created_at)),
        last_updated_at: Some(timestamp(row.last_updated_at)),
        deleted_at: row.deleted_at.map(timestamp),
        repo: Some(pb::RepoSummary {
            id: row.repo_id.to_string(),
            name: row.repo_name,
        }),
        creator: Some(pb::UserSummary {
            id: row.created_by.to_string(),
            name: row.creator_name.unwrap_or_default(),
            last_name: row.creator_last_name.unwrap_or_default(),
            email: row.creator_email,
        }),
    }
}

/// Which end of a range a time bound is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    Start,
    End,
}

/// Parses an inclusive bound on a creation time, an RFC 3339 date-time or a
/// full date (the ISO 8601 forms the OpenAPI `date-time` and `date` formats
/// name), into the half-open range the store uses: `Start` gives "at or
/// after", `End` "strictly before" (a date as the end includes that whole
/// day; a time, that microsecond). Empty means unbounded.
fn parse_time_bound(
    name: &str,
    value: &str,
    bound: Bound,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        ApiError::InvalidArgument(format!(
            "{name} must be an ISO 8601 date or date-time (e.g. 2026-01-31 or 2026-01-31T12:00:00Z)"
        ))
    };
    let (start, is_date) = if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        (t.with_timezone(&Utc), false)
    } else if value.len() == 10
        && let Ok(d) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
    {
        (d.and_hms_opt(0, 0, 0).ok_or_else(invalid)?.and_utc(), true)
    } else {
        return Err(invalid());
    };
    let start = start.trunc_subsecs(6);
    let bound = match (bound, is_date) {
        (Bound::Start, _) => start,
        (Bound::End, true) => start + chrono::TimeDelta::days(1),
        (Bound::End, false) => start + chrono::TimeDelta::microseconds(1),
    };
    // Stored times have four-digit years; the end of 9999-12-31 stays in range.
    let last = chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map(|t| t.and_utc())
        .ok_or_else(invalid)?;
    Ok(Some(bound.min(last)))
}

/// An optional id filter: empty means not given.
fn optional_uuid_field(name: &str, value: &str) -> Result<Option<Uuid>, ApiError> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse_uuid_field(name, value).map(Some)
    }
}

/// Per-call facts every rpc needs: the request id (kept from the caller when
/// sane, made otherwise) and the transport.
pub struct CallContext {
    pub request_id: String,
    pub transport: Transport,
}

impl CallContext {
    fn of<T>(request: &Request<T>) -> Self {
        let request_id = request
            .metadata()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_sane_request_id(v))
            .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
        let transport = request
            .extensions()
            .get::<Transport>()
            .copied()
            .unwrap_or(Transport::Grpc);
        Self {
            request_id,
            transport,
        }
    }

    /// Finishes an rpc: the reply or the error, each carrying the request id.
    fn finish<T>(&self, result: Result<T, ApiError>) -> Result<Response<T>, Status> {
        let id = MetadataValue::try_from(self.request_id.as_str()).ok();
        match result {
            Ok(reply) => {
                let mut response = Response::new(reply);
                if let Some(id) = id {
                    response.metadata_mut().insert(REQUEST_ID, id);
                }
                Ok(response)
            }
            Err(e) => {
                let mut status = Status::from(e);
                if let Some(id) = id {
                    status.metadata_mut().insert(REQUEST_ID, id);
                }
                Err(status)
            }
        }
    }
}

/// Rule 1 on a token looked up by its hash: it exists, is neither revoked nor
/// expired, and its user is enabled. Records its use now and then.
fn check_token(store: &Store, owner: Option<TokenOwner>) -> Result<Caller, ApiError> {
    let owner = owner.ok_or(ApiError::Unauthenticated)?;
    let now = Utc::now();
    let expired = owner.expires_at.is_some_and(|t| t <= now);
    if owner.revoked_at.is_some() || expired || owner.disabled_at.is_some() {
        return Err(ApiError::Unauthenticated);
    }
    if owner
        .last_used_at
        .is_none_or(|t| now - t > TOKEN_TOUCH_INTERVAL)
    {
        let store = store.clone();
        let token_id = owner.token_id;
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(token_id, now).await {
                tracing::debug!(error = %e, "could not record token use");
            }
        });
    }
    enabled_caller(UserRow {
        user_id: owner.user_id,
        org_id: owner.org_id,
        email: owner.email,
        name: owner.name,
        last_name: owner.last_name,
        org_role: owner.org_role,
        disabled_at: owner.disabled_at,
    })
}

/// Rule 1 on the user behind a credential: enabled, with a known role.
fn enabled_caller(user: UserRow) -> Result<Caller, ApiError> {
    if user.disabled_at.is_some() {
        return Err(ApiError::Unauthenticated);
    }
    let role: OrgRole = user.org_role.parse().map_err(|e| ApiError::Internal {
        public: "Failed to authenticate",
        detail: format!("user {}: {e}", user.user_id),
    })?;
    Ok(Caller {
        user_id: user.user_id,
        org_id: user.org_id,
        role,
        email: user.email,
        name: user.name,
        last_name: user.last_name,
    })
}

/// Rule 1 before any lookup: exactly one `authorization` value, of the
/// Bearer scheme, with a well-formed credential; returns the credential.
fn bearer(metadata: &MetadataMap) -> Result<&str, ApiError> {
    let mut values = metadata.get_all("authorization").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::Unauthenticated);
    };
    parse_bearer(value.as_bytes()).ok_or(ApiError::Unauthenticated)
}

/// The caller's idempotency key, if they sent one: exactly one value of 1 to
/// 255 visible ASCII characters.
fn idempotency_key(metadata: &MetadataMap) -> Result<Option<String>, ApiError> {
    let mut values = metadata.get_all(IDEMPOTENCY_KEY).iter();
    let (first, second) = (values.next(), values.next());
    match (first, second) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::InvalidArgument(
            "Idempotency-Key must be given once".into(),
        )),
        (Some(value), None) => match value.to_str() {
            Ok(key)
                if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Ok(Some(key.to_owned()))
            }
            _ => Err(ApiError::InvalidArgument(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            )),
        },
    }
}

/// What identifies a create request, to tell a retry from another request.
fn create_fingerprint(repo_id: Uuid) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::new()
        .chain_update(b"CreateConversation\n")
        .chain_update(repo_id.as_bytes())
        .finalize()
        .into()
}

/// A request id worth keeping: 1 to 128 visible ASCII characters.
pub fn is_sane_request_id(v: &str) -> bool {
    (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses a required id field: a UUID in canonical hyphenated form.
fn parse_uuid_field(name: &str, value: &str) -> Result<Uuid, ApiError> {
    if value.is_empty() {
        return Err(ApiError::InvalidArgument(format!("{name} is required")));
    }
    if value.len() != 36 {
        return Err(ApiError::InvalidArgument(format!("{name} must be a UUID")));
    }
    Uuid::try_parse(value).map_err(|_| ApiError::InvalidArgument(format!("{name} must be a UUID")))
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

#[tonic::async_trait]
impl ConversationService for ConversationApi {
    async fn create_conversation(
        &self,
        request: Request<CreateConversationRequest>,
    ) -> Result<Response<CreateConversationResponse>, Status> {
        let ctx = CallContext::of(&request);
        ctx.finish(self.create(&request, &ctx).await)
    }

    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        let ctx = CallContext::of(&request);
        ctx.finish(self.list(&request).await)
    }

    async fn get_conversation(
        &self,
        request: Request<GetConversationRequest>,
    ) -> Result<Response<GetConversationResponse>, Status> {
        let ctx = CallContext::of(&request);
        ctx.finish(self.get(&request).await)
    }

    async fn delete_conversation(
        &self,
        request: Request<DeleteConversationRequest>,
    ) -> Result<Response<DeleteConversationResponse>, Status> {
        let ctx = CallContext::of(&request);
        ctx.finish(self.delete(&request, &ctx).await)
    }

    async fn prompt_conversation(
        &self,
        request: Request<PromptConversationRequest>,
    ) -> Result<Response<PromptConversationResponse>, Status> {
        let ctx = CallContext::of(&request);
        ctx.finish(self.prompt(&request).await)
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let ctx = CallContext::of(&request);
        ctx.finish(self.messages(&request).await)
    }

    type StreamPromptConversationStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::PromptConversationEvent, Status>> + Send>,
    >;

    async fn stream_prompt_conversation(
        &self,
        request: Request<PromptConversationRequest>,
    ) -> Result<Response<Self::StreamPromptConversationStream>, Status> {
        let ctx = CallContext::of(&request);
        let events = self.prompt_stream(&request).await.map(|mut receiver| {
            Box::pin(futures_util::stream::poll_fn(move |cx| {
                receiver.poll_recv(cx)
            })) as Self::StreamPromptConversationStream
        });
        ctx.finish(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_canonical_uuids() {
        let ok = "0193a000-0000-7000-8000-000000000001";
        assert_eq!(
            parse_uuid_field("repoId", ok).expect("valid").to_string(),
            ok
        );
        assert_eq!(
            parse_uuid_field("repoId", &ok.to_uppercase())
                .expect("valid")
                .to_string(),
            ok
        );
        for bad in [
            "repo-123",
            "0193a0000000700080000000000000001",
            "{0193a000-0000-7000-8000-000000000001}",
            " 0193a000-0000-7000-8000-00000000001",
        ] {
            assert_eq!(
                parse_uuid_field("repoId", bad).expect_err(bad).to_string(),
                "repoId must be a UUID"
            );
        }
        assert_eq!(
            parse_uuid_field("repoId", "")
                .expect_err("empty")
                .to_string(),
            "repoId is required"
        );
    }

    #[test]
    fn time_bounds_are_inclusive_iso_8601() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("valid")
                .with_timezone(&Utc)
        };
        let start = |v| parse_time_bound("from", v, Bound::Start).expect(v);
        let end = |v| parse_time_bound("to", v, Bound::End).expect(v);
        assert_eq!(start(""), None);
        assert_eq!(start("2026-01-31"), Some(t("2026-01-31T00:00:00Z")));
        assert_eq!(end("2026-01-31"), Some(t("2026-02-01T00:00:00Z")));
        assert_eq!(end("9999-12-31"), Some(t("9999-12-31T23:59:59.999999Z")));
        assert_eq!(
            start("2026-01-31T12:00:00+02:00"),
            Some(t("2026-01-31T10:00:00Z"))
        );
        assert_eq!(
            end("2026-01-31T12:00:00.5Z"),
            Some(t("2026-01-31T12:00:00.500001Z"))
        );
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-01-31T25:00:00Z",
            "31/01/2026",
            "1706700000",
            "2026-01-31T12:00:00",
            "2026-1-31",
            "+2026-01-31",
        ] {
            let e = parse_time_bound("from", bad, Bound::Start).expect_err(bad);
            assert!(
                e.to_string().starts_with("from must be an ISO 8601"),
                "{bad}"
            );
        }
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert!(is_sane_request_id("abc-123"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("has space"));
        assert!(!is_sane_request_id(&"x".repeat(129)));
    }
}
