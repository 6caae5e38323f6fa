//! The one implementation of `flashback.conversation.v1.ConversationService`.
//! gRPC calls arrive here directly; the REST gateway calls the same methods
//! in-process. Every rule is here, in the order the API documents:
//! authenticate, validate, find, check state, authorize, act.

use chrono::{DateTime, Utc};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::auth::{hash_token, parse_bearer};
use crate::domain::{Caller, OrgRole, Transport};
use crate::error::ApiError;
use crate::pb::conversation_service_server::ConversationService;
use crate::pb::{self, CreateConversationRequest, CreateConversationResponse};
use crate::store::Store;
use crate::store::conversations::{NewConversation, NewEvent};
use crate::store::types::{SqlJson, SqlTime, SqlUuid, now};

/// The metadata key (and HTTP header) of the request id.
pub const REQUEST_ID: &str = "x-request-id";

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
}

impl ConversationApi {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Rule 1: a valid bearer token of an enabled user.
    async fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, ApiError> {
        let mut values = metadata.get_all("authorization").iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(ApiError::Unauthenticated);
        };
        let token = parse_bearer(value.as_bytes()).ok_or(ApiError::Unauthenticated)?;
        let owner = self
            .store
            .find_token(hash_token(token))
            .await
            .map_err(ApiError::from_store("Failed to authenticate"))?
            .ok_or(ApiError::Unauthenticated)?;
        let now = Utc::now();
        let expired = owner.expires_at.is_some_and(|t| t <= now);
        if owner.revoked_at.is_some() || expired || owner.disabled_at.is_some() {
            return Err(ApiError::Unauthenticated);
        }
        let role: OrgRole = owner.org_role.parse().map_err(|e| ApiError::Internal {
            public: "Failed to authenticate",
            detail: format!("user {}: {e}", owner.user_id),
        })?;
        if owner
            .last_used_at
            .is_none_or(|t| now - t > TOKEN_TOUCH_INTERVAL)
        {
            let store = self.store.clone();
            let token_id = owner.token_id;
            tokio::spawn(async move {
                if let Err(e) = store.touch_token(token_id, now).await {
                    tracing::debug!(error = %e, "could not record token use");
                }
            });
        }
        Ok(Caller {
            user_id: owner.user_id,
            org_id: owner.org_id,
            role,
            email: owner.email,
            name: owner.name,
            last_name: owner.last_name,
        })
    }

    async fn create(
        &self,
        request: &Request<CreateConversationRequest>,
        ctx: &CallContext,
    ) -> Result<CreateConversationResponse, ApiError> {
        const FAILED: &str = "Failed to create conversation";
        // 1. Who is calling.
        let caller = self.authenticate(request.metadata()).await?;
        // 2. What they ask for.
        if let Some(FieldError(message)) = request.extensions().get::<FieldError>() {
            return Err(ApiError::InvalidArgument(message.clone()));
        }
        let repo_id = parse_uuid_field("repoId", &request.get_ref().repo_id)?;
        // 3. The repository, as the caller's organization sees it.
        let repo = self
            .store
            .repo_access(repo_id, caller.user_id)
            .await
            .map_err(ApiError::from_store(FAILED))?
            .filter(|r| {
                r.org_id == caller.org_id
                    && r.deleted_at.is_none()
                    && r.workspace_deleted_at.is_none()
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
                "transport": ctx.transport.as_str(),
                "requestId": ctx.request_id,
            }))),
            created_at: SqlTime(at),
        };
        self.store
            .insert_conversation(conversation, event)
            .await
            .map_err(ApiError::from_store(FAILED))?;
        tracing::info!(conversation_id = %id, repo_id = %repo.id, user_id = %caller.user_id,
            request_id = %ctx.request_id, transport = ctx.transport.as_str(), "conversation created");
        Ok(CreateConversationResponse {
            conversation_id: id.to_string(),
            conversation: Some(pb::Conversation {
                id: id.to_string(),
                org_id: repo.org_id.to_string(),
                workspace_id: workspace_id.to_string(),
                repo_id: repo.id.to_string(),
                created_by: caller.user_id.to_string(),
                title: String::new(),
                tokens_in: 0,
                tokens_out: 0,
                created_at: Some(timestamp(at)),
                last_updated_at: Some(timestamp(at)),
                deleted_at: None,
                repo: Some(pb::RepoSummary {
                    id: repo.id.to_string(),
                    name: repo.name,
                }),
                creator: Some(pb::UserSummary {
                    id: caller.user_id.to_string(),
                    name: caller.name.unwrap_or_default(),
                    last_name: caller.last_name.unwrap_or_default(),
                    email: caller.email,
                }),
            }),
        })
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
    fn request_ids_are_kept_only_when_sane() {
        assert!(is_sane_request_id("abc-123"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("has space"));
        assert!(!is_sane_request_id(&"x".repeat(129)));
    }
}
