//! `flashback.conversation.v1.ConversationService` over the core: each rpc
//! reads its metadata and message into the operation's typed input, calls
//! the same [`Service`] method as the REST route, and maps the view back to
//! protobuf. The message rpcs' conversions live in [`super::messages`].

use std::sync::Arc;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use super::call::{self, given, timestamp};
use super::messages;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::pb::conversation_service_server::ConversationService;
use crate::pb::{
    self, CreateConversationRequest, CreateConversationResponse, DeleteConversationRequest,
    DeleteConversationResponse, GetConversationRequest, GetConversationResponse,
    ListConversationsRequest, ListConversationsResponse, ListMessagesRequest, ListMessagesResponse,
    PromptConversationRequest, PromptConversationResponse, StreamPromptConversationRequest,
};
use crate::service::conversations::{
    Conversation, CreateConversation, DeleteConversation, GetConversation, ListConversations,
};
use crate::service::messages::PromptStream;
use crate::service::params::{self, Bound, Page};
use crate::service::{Credentials, RequestContext, Service};

/// The gRPC face of the service.
#[derive(Clone)]
pub struct GrpcApi {
    service: Arc<Service>,
}

impl GrpcApi {
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }

    /// An rpc of an authenticated caller: rules 1 and 2 in their order
    /// (`Service::admit`), then `op` with the caller and the input; the reply
    /// or the status, each with the request id.
    pub(super) async fn call<I, T>(
        &self,
        metadata: &MetadataMap,
        input: Result<I, ApiError>,
        op: impl AsyncFnOnce(Arc<Service>, Caller, I, RequestContext) -> Result<T, ApiError>,
    ) -> Result<Response<T>, Status> {
        let ctx = call::context(metadata);
        let result = async {
            let (caller, input) = self
                .service
                .admit(&call::credentials(metadata), input)
                .await?;
            op(self.service.clone(), caller, input, ctx.clone()).await
        };
        call::finish(&ctx, result.await)
    }

    /// An rpc that finds its caller itself, with what it reads first (the
    /// create, a prompt): `op` gets the caller's credentials, unchecked.
    async fn call_with_credentials<T>(
        &self,
        metadata: &MetadataMap,
        op: impl AsyncFnOnce(&Service, &Credentials, &RequestContext) -> Result<T, ApiError>,
    ) -> Result<Response<T>, Status> {
        let ctx = call::context(metadata);
        let result = op(&self.service, &call::credentials(metadata), &ctx).await;
        call::finish(&ctx, result)
    }
}

/// A conversation as protobuf.
pub fn conversation_pb(row: Conversation) -> pb::Conversation {
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

fn list_input(r: &ListConversationsRequest) -> Result<ListConversations, ApiError> {
    Ok(ListConversations {
        page: Page::new(r.take, r.skip)?,
        from: params::time_bound("from", given(&r.from), Bound::Start)?,
        until: params::time_bound("to", given(&r.to), Bound::End)?,
        user_id: params::optional_uuid("userId", given(&r.user_id))?,
        workspace_id: params::optional_uuid("workspaceId", given(&r.workspace_id))?,
        repo_id: params::optional_uuid("repoId", given(&r.repo_id))?,
        show_deleted: r.show_deleted,
    })
}

/// The stream a streamed prompt answers with.
pub type PromptEventStream = messages::EventStream<pb::StreamPromptConversationResponse>;

#[tonic::async_trait]
impl ConversationService for GrpcApi {
    async fn create_conversation(
        &self,
        request: Request<CreateConversationRequest>,
    ) -> Result<Response<CreateConversationResponse>, Status> {
        let input = params::uuid("repoId", &request.get_ref().repo_id).and_then(|repo_id| {
            Ok(CreateConversation {
                repo_id,
                idempotency_key: call::idempotency_key(request.metadata())?,
            })
        });
        self.call_with_credentials(request.metadata(), async |service, credentials, ctx| {
            let row = service.create_conversation(credentials, input, ctx).await?;
            Ok(CreateConversationResponse {
                conversation_id: row.id.to_string(),
                conversation: Some(conversation_pb(row)),
            })
        })
        .await
    }

    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        let input = list_input(request.get_ref());
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, _| {
                let page = service.list_conversations(&caller, input).await?;
                Ok(ListConversationsResponse {
                    conversations: page
                        .conversations
                        .into_iter()
                        .map(conversation_pb)
                        .collect(),
                    total: page.total,
                })
            },
        )
        .await
    }

    async fn get_conversation(
        &self,
        request: Request<GetConversationRequest>,
    ) -> Result<Response<GetConversationResponse>, Status> {
        let r = request.get_ref();
        let input = params::uuid("conversationId", &r.conversation_id).map(|id| GetConversation {
            id,
            show_deleted: r.show_deleted,
        });
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, _| {
                let row = service.get_conversation(&caller, input).await?;
                Ok(GetConversationResponse {
                    conversation: Some(conversation_pb(row)),
                })
            },
        )
        .await
    }

    async fn delete_conversation(
        &self,
        request: Request<DeleteConversationRequest>,
    ) -> Result<Response<DeleteConversationResponse>, Status> {
        let r = request.get_ref();
        let input =
            params::uuid("conversationId", &r.conversation_id).map(|id| DeleteConversation {
                id,
                hard: r.hard_delete,
            });
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, ctx| {
                service.delete_conversation(&caller, input, &ctx).await?;
                Ok(DeleteConversationResponse {})
            },
        )
        .await
    }

    async fn prompt_conversation(
        &self,
        request: Request<PromptConversationRequest>,
    ) -> Result<Response<PromptConversationResponse>, Status> {
        let r = request.get_ref();
        let input = messages::prompt_input(
            &r.conversation_id,
            &r.prompt,
            &r.model,
            pb::OnDisconnect::Cancel,
        );
        self.call_with_credentials(request.metadata(), async |service, credentials, ctx| {
            Ok(messages::turn_pb(
                service.prompt(credentials, input, ctx).await?,
            ))
        })
        .await
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let input = messages::list_input(request.get_ref());
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, _| {
                Ok(messages::page_pb(
                    service.list_messages(&caller, input).await?,
                ))
            },
        )
        .await
    }

    type StreamPromptConversationStream = PromptEventStream;

    async fn stream_prompt_conversation(
        &self,
        request: Request<StreamPromptConversationRequest>,
    ) -> Result<Response<Self::StreamPromptConversationStream>, Status> {
        let r = request.get_ref();
        let input =
            messages::prompt_input(&r.conversation_id, &r.prompt, &r.model, r.on_disconnect());
        let response = self
            .call_with_credentials(request.metadata(), async |service, credentials, ctx| {
                service.prompt_stream(credentials, input, ctx).await
            })
            .await?;
        Ok(with_turn_id(response, messages::prompt_event))
    }

    type ResumePromptStreamStream = messages::EventStream<pb::ResumePromptStreamResponse>;

    async fn resume_prompt_stream(
        &self,
        request: Request<pb::ResumePromptStreamRequest>,
    ) -> Result<Response<Self::ResumePromptStreamStream>, Status> {
        let r = request.get_ref();
        let input = (|| {
            let conversation = params::uuid("conversationId", &r.conversation_id)?;
            Ok((conversation, params::uuid("turnId", &r.turn_id)?, r.after))
        })();
        let response = self
            .call(
                request.metadata(),
                input,
                async |service, caller, (conversation, turn, after), _| {
                    service
                        .resume_stream(&caller, conversation, turn, after)
                        .await
                },
            )
            .await?;
        Ok(with_turn_id(response, messages::resumed_event))
    }
}

/// A prompt's stream as the rpc's reply, naming its turn in the `turn-id`
/// metadata too (known before the first event).
fn with_turn_id<T: Send + 'static>(
    response: Response<PromptStream>,
    event: fn(Option<messages::Event>, String, u64) -> T,
) -> Response<messages::EventStream<T>> {
    let turn = MetadataValue::try_from(response.get_ref().turn_id.to_string()).ok();
    let mut response = response.map(|stream| messages::event_stream(stream, event));
    if let Some(turn) = turn {
        response.metadata_mut().insert("turn-id", turn);
    }
    response
}
