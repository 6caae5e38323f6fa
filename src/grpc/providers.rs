//! `flashback.ai.v1.ProviderService` over the core: the same operations as
//! the `/ai/llm` routes, with the same parsers and rules.

use tonic::{Request, Response, Status};

use super::GrpcApi;
use super::call::{given, timestamp};
use crate::error::ApiError;
use crate::pb::ai::provider_service_server::ProviderService;
use crate::pb::ai::{
    self, AttachRepositoryRequest, AttachRepositoryResponse, CreateProviderRequest,
    CreateProviderResponse, DeleteProviderRequest, DeleteProviderResponse, DetachRepositoryRequest,
    DetachRepositoryResponse, ListAvailableProvidersRequest, ListAvailableProvidersResponse,
    ListModelsRequest, ListModelsResponse, ListProvidersRequest, ListProvidersResponse,
    UpdateProviderRequest, UpdateProviderResponse, ValidateProviderRequest,
    ValidateProviderResponse,
};
use crate::service::params;
use crate::service::providers::{
    self, AttachRepo, CreateProvider, ListModels, ListProviders, ProviderView, UpdateProvider,
};

/// A configuration as protobuf.
fn provider_pb(p: ProviderView) -> ai::Provider {
    ai::Provider {
        id: p.id.to_string(),
        org_id: p.org_id.to_string(),
        workspace_id: p.workspace_id.to_string(),
        user_id: p.created_by.to_string(),
        name: p.name,
        ai_type: p.ai_type.as_str().to_owned(),
        endpoint: p.endpoint,
        has_key: p.has_key,
        created_at: Some(timestamp(p.created_at)),
        repos: p
            .repos
            .into_iter()
            .map(|r| ai::AttachedRepository {
                id: r.repo_id.to_string(),
                name: r.name,
                attached_at: Some(timestamp(r.attached_at)),
            })
            .collect(),
    }
}

fn create_input(r: &CreateProviderRequest) -> Result<CreateProvider, ApiError> {
    Ok(CreateProvider {
        name: providers::provider_name(given(&r.name).map(str::to_owned))?,
        ai_type: providers::ai_type(given(&r.ai_type))?,
        endpoint: r.endpoint.clone(),
        key: providers::secret_value("key", r.key.clone())?,
        secret: providers::secret_value("secret", given(&r.secret).map(str::to_owned))?
            .ok_or_else(|| ApiError::InvalidArgument("secret is required".into()))?,
        workspace_id: params::uuid("workspaceId", &r.workspace_id)?,
    })
}

fn update_input(r: &UpdateProviderRequest) -> Result<UpdateProvider, ApiError> {
    Ok(UpdateProvider {
        id: params::uuid("id", &r.id)?,
        name: r
            .name
            .clone()
            .map(|n| providers::provider_name(Some(n)))
            .transpose()?,
        ai_type: r
            .ai_type
            .as_deref()
            .map(|t| providers::ai_type(Some(t)))
            .transpose()?,
        endpoint: r.endpoint.clone(),
        key: providers::secret_value("key", r.key.clone())?,
        secret: providers::secret_value("secret", r.secret.clone())?,
    })
}

fn attachment(id: &str, repo_id: &str) -> Result<AttachRepo, ApiError> {
    Ok(AttachRepo {
        id: params::uuid("id", id)?,
        repo_id: params::uuid("repoId", repo_id)?,
    })
}

#[tonic::async_trait]
impl ProviderService for GrpcApi {
    async fn create_provider(
        &self,
        request: Request<CreateProviderRequest>,
    ) -> Result<Response<CreateProviderResponse>, Status> {
        let input = create_input(request.get_ref());
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, ctx| {
                let id = service.create_provider(&caller, input, &ctx).await?;
                Ok(CreateProviderResponse {
                    ai_llm_id: id.to_string(),
                })
            },
        )
        .await
    }

    async fn list_providers(
        &self,
        request: Request<ListProvidersRequest>,
    ) -> Result<Response<ListProvidersResponse>, Status> {
        let workspace = given(&request.get_ref().workspace_id);
        let input = params::optional_uuid("workspaceId", workspace)
            .map(|workspace_id| ListProviders { workspace_id });
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, _| {
                let list = service.list_providers(&caller, input).await?;
                Ok(ListProvidersResponse {
                    providers: list.into_iter().map(provider_pb).collect(),
                })
            },
        )
        .await
    }

    async fn update_provider(
        &self,
        request: Request<UpdateProviderRequest>,
    ) -> Result<Response<UpdateProviderResponse>, Status> {
        let input = update_input(request.get_ref());
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, ctx| {
                let id = service.update_provider(&caller, input, &ctx).await?;
                Ok(UpdateProviderResponse {
                    ai_llm_id: id.to_string(),
                })
            },
        )
        .await
    }

    async fn delete_provider(
        &self,
        request: Request<DeleteProviderRequest>,
    ) -> Result<Response<DeleteProviderResponse>, Status> {
        let input = params::uuid("id", &request.get_ref().id);
        self.call(
            request.metadata(),
            input,
            async |service, caller, id, ctx| {
                service.delete_provider(&caller, id, &ctx).await?;
                Ok(DeleteProviderResponse {})
            },
        )
        .await
    }

    async fn attach_repository(
        &self,
        request: Request<AttachRepositoryRequest>,
    ) -> Result<Response<AttachRepositoryResponse>, Status> {
        let r = request.get_ref();
        let input = attachment(&r.id, &r.repo_id);
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, ctx| {
                service.attach_repo(&caller, input, &ctx).await?;
                Ok(AttachRepositoryResponse {})
            },
        )
        .await
    }

    async fn detach_repository(
        &self,
        request: Request<DetachRepositoryRequest>,
    ) -> Result<Response<DetachRepositoryResponse>, Status> {
        let r = request.get_ref();
        let input = attachment(&r.id, &r.repo_id);
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, ctx| {
                service.detach_repo(&caller, input, &ctx).await?;
                Ok(DetachRepositoryResponse {})
            },
        )
        .await
    }

    async fn list_available_providers(
        &self,
        request: Request<ListAvailableProvidersRequest>,
    ) -> Result<Response<ListAvailableProvidersResponse>, Status> {
        self.call(
            request.metadata(),
            Ok(()),
            async |service, caller, (), _| {
                let list = service.available_providers(&caller).await?;
                Ok(ListAvailableProvidersResponse {
                    providers: list.into_iter().map(provider_pb).collect(),
                })
            },
        )
        .await
    }

    async fn validate_provider(
        &self,
        request: Request<ValidateProviderRequest>,
    ) -> Result<Response<ValidateProviderResponse>, Status> {
        let input = params::uuid("id", &request.get_ref().id);
        self.call(request.metadata(), input, async |service, caller, id, _| {
            let message = service.validate_provider(&caller, id).await?;
            Ok(ValidateProviderResponse { message })
        })
        .await
    }

    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let r = request.get_ref();
        let input = (|| {
            let kind = |v: &str| given(v).map(|t| providers::ai_type(Some(t))).transpose();
            Ok(ListModels {
                ai_type: kind(&r.ai_type)?,
                llm_type: kind(&r.llm_type)?,
                repo_id: params::uuid("repoId", &r.repo_id)?,
            })
        })();
        self.call(
            request.metadata(),
            input,
            async |service, caller, input, _| {
                let models = service.list_models(&caller, input).await?;
                Ok(ListModelsResponse {
                    models: models
                        .into_iter()
                        .map(|m| ai::Model {
                            id: m.id,
                            ai_type: m.ai_type.as_str().to_owned(),
                            ai_llm_id: m.ai_llm_id.to_string(),
                            llm_provider: m.provider,
                            created: m
                                .created
                                .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
                        })
                        .collect(),
                })
            },
        )
        .await
    }
}
