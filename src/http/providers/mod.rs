//! The provider configuration routes (`/ai/llm`), as the platform's client
//! calls them.

pub mod dto;

use axum::Json;
use axum::extract::{Path, State};

use super::AppState;
use super::conversations::dto::SuccessReply;
use super::error::{ApiErrors, ErrorReply};
use super::extract::{Authenticated, JsonBody, Query};
use crate::error::ApiError;
use crate::service::params;
use crate::service::providers::{
    self, AttachRepo, CreateProvider, ListModels, ListProviders, UpdateProvider,
};
use crate::service::{Credentials, RequestContext};
use dto::{
    AiLlmDto, AiLlmIdReply, AiLlmsReply, AttachBody, CreateAiLlmBody, ListAiLlmsQuery, ModelDto,
    ModelsBody, ModelsReply, UpdateAiLlmBody, ValidateReply,
};

/// The input of a create, read from its body.
fn create_input(body: CreateAiLlmBody) -> Result<CreateProvider, ApiError> {
    let name = providers::provider_name(body.name.text("name")?)?;
    let ai_type = providers::ai_type(body.ai_type.text("aiType")?.as_deref())?;
    let endpoint = body.endpoint.text("endpoint")?.unwrap_or_default();
    let key = providers::secret_value("key", body.key.text("key")?)?;
    let secret = providers::secret_value("secret", body.secret.text("secret")?)?
        .ok_or_else(|| ApiError::InvalidArgument("secret is required".into()))?;
    let workspace = body.workspace_id.text("workspaceId")?.unwrap_or_default();
    Ok(CreateProvider {
        workspace_id: params::uuid("workspaceId", &workspace)?,
        name,
        ai_type,
        endpoint,
        key,
        secret,
    })
}

/// Connect a model provider to a workspace.
///
/// Organization administrators and owners, and the workspace's administrators.
/// `key` and `secret` are stored encrypted and never returned.
#[utoipa::path(post, path = "/ai/llm", tag = "ai",
    request_body = CreateAiLlmBody,
    responses(
        ApiErrors,
        (status = 200, description = "Created", body = AiLlmIdReply),
        (status = 400, description = "Invalid body: missing field, unknown aiType, refused endpoint", body = ErrorReply),
        (status = 403, description = "Not an administrator of the workspace", body = ErrorReply),
        (status = 404, description = "Workspace not found", body = ErrorReply),
        (status = 409, description = "The workspace has a configuration of this name", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
        (status = 501, description = "No secrets key is configured", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn create_ai_llm(
    State(service): State<AppState>,
    credentials: Credentials,
    ctx: RequestContext,
    JsonBody(body): JsonBody<CreateAiLlmBody>,
) -> Result<Json<AiLlmIdReply>, ApiError> {
    let (caller, input) = service.admit(&credentials, create_input(body)).await?;
    let id = service.create_provider(&caller, input, &ctx).await?;
    Ok(Json(AiLlmIdReply {
        success: true,
        ai_llm_id: id.to_string(),
    }))
}

/// The configurations of the workspaces the caller reaches, by name.
#[utoipa::path(get, path = "/ai/llm", tag = "ai",
    params(ListAiLlmsQuery),
    responses(
        ApiErrors,
        (status = 200, description = "The configurations (never their secrets)", body = AiLlmsReply),
        (status = 400, description = "Invalid parameter", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn list_ai_llms(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<ListAiLlmsQuery>,
) -> Result<Json<AiLlmsReply>, ApiError> {
    let input = ListProviders {
        workspace_id: params::optional_uuid("workspaceId", q.workspace_id.as_deref())?,
    };
    let list = service.list_providers(&caller, input).await?;
    Ok(Json(AiLlmsReply {
        success: true,
        ai_llms: list.into_iter().map(AiLlmDto::from).collect(),
    }))
}

/// Change a configuration: any of its name, kind, endpoint, key and secret.
#[utoipa::path(put, path = "/ai/llm/{id}", tag = "ai",
    request_body = UpdateAiLlmBody,
    params(("id" = String, Path, format = Uuid, description = "The configuration")),
    responses(
        ApiErrors,
        (status = 200, description = "Updated", body = AiLlmIdReply),
        (status = 400, description = "Invalid body, or nothing to update", body = ErrorReply),
        (status = 403, description = "Not an administrator of the workspace", body = ErrorReply),
        (status = 404, description = "AI configuration not found", body = ErrorReply),
        (status = 409, description = "The workspace has a configuration of this name", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
        (status = 501, description = "No secrets key is configured (to change a credential)", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn update_ai_llm(
    Path(id): Path<String>,
    State(service): State<AppState>,
    credentials: Credentials,
    ctx: RequestContext,
    JsonBody(body): JsonBody<UpdateAiLlmBody>,
) -> Result<Json<AiLlmIdReply>, ApiError> {
    let input = (|| {
        let name = body.name.text("name")?;
        Ok(UpdateProvider {
            id: params::uuid("id", &id)?,
            name: name
                .map(|n| providers::provider_name(Some(n)))
                .transpose()?,
            ai_type: body
                .ai_type
                .text("aiType")?
                .map(|t| providers::ai_type(Some(&t)))
                .transpose()?,
            endpoint: body.endpoint.text("endpoint")?,
            key: providers::secret_value("key", body.key.text("key")?)?,
            secret: providers::secret_value("secret", body.secret.text("secret")?)?,
        })
    })();
    let (caller, input) = service.admit(&credentials, input).await?;
    let id = service.update_provider(&caller, input, &ctx).await?;
    Ok(Json(AiLlmIdReply {
        success: true,
        ai_llm_id: id.to_string(),
    }))
}

/// Delete a configuration for good (refused while repositories use it).
#[utoipa::path(delete, path = "/ai/llm/{id}", tag = "ai",
    params(("id" = String, Path, format = Uuid, description = "The configuration")),
    responses(
        ApiErrors,
        (status = 200, description = "Deleted", body = SuccessReply),
        (status = 400, description = "Invalid id", body = ErrorReply),
        (status = 403, description = "Not an administrator of the workspace, or in use by repositories", body = ErrorReply),
        (status = 404, description = "AI configuration not found", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn delete_ai_llm(
    Path(id): Path<String>,
    State(service): State<AppState>,
    ctx: RequestContext,
    Authenticated(caller): Authenticated,
) -> Result<Json<SuccessReply>, ApiError> {
    let id = params::uuid("id", &id)?;
    service.delete_provider(&caller, id, &ctx).await?;
    Ok(Json(SuccessReply { success: true }))
}

/// Attach a repository of the configuration's workspace.
#[utoipa::path(post, path = "/ai/llm/{id}/repos", tag = "ai",
    request_body = AttachBody,
    params(("id" = String, Path, format = Uuid, description = "The configuration")),
    responses(
        ApiErrors,
        (status = 200, description = "Attached", body = SuccessReply),
        (status = 400, description = "Invalid body, or a repository of another workspace", body = ErrorReply),
        (status = 403, description = "Not an administrator of the workspace", body = ErrorReply),
        (status = 404, description = "AI configuration or repository not found", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn attach_repo(
    Path(id): Path<String>,
    State(service): State<AppState>,
    credentials: Credentials,
    ctx: RequestContext,
    JsonBody(body): JsonBody<AttachBody>,
) -> Result<Json<SuccessReply>, ApiError> {
    let input = (|| {
        let repo = body.repo_id.text("repoId")?.unwrap_or_default();
        Ok(AttachRepo {
            id: params::uuid("id", &id)?,
            repo_id: params::uuid("repoId", &repo)?,
        })
    })();
    let (caller, input) = service.admit(&credentials, input).await?;
    service.attach_repo(&caller, input, &ctx).await?;
    Ok(Json(SuccessReply { success: true }))
}

/// Detach a repository.
#[utoipa::path(delete, path = "/ai/llm/{id}/repos/{repoId}", tag = "ai",
    params(
        ("id" = String, Path, format = Uuid, description = "The configuration"),
        ("repoId" = String, Path, format = Uuid, description = "The repository"),
    ),
    responses(
        ApiErrors,
        (status = 200, description = "Detached", body = SuccessReply),
        (status = 400, description = "Invalid id", body = ErrorReply),
        (status = 403, description = "Not an administrator of the workspace", body = ErrorReply),
        (status = 404, description = "AI configuration not found, or the repository is not attached", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn detach_repo(
    Path((id, repo_id)): Path<(String, String)>,
    State(service): State<AppState>,
    ctx: RequestContext,
    Authenticated(caller): Authenticated,
) -> Result<Json<SuccessReply>, ApiError> {
    let input = AttachRepo {
        id: params::uuid("id", &id)?,
        repo_id: params::uuid("repoId", &repo_id)?,
    };
    service.detach_repo(&caller, input, &ctx).await?;
    Ok(Json(SuccessReply { success: true }))
}

/// The configurations the caller may see that validated and can be used.
#[utoipa::path(get, path = "/ai/llm/available", tag = "ai",
    responses(
        ApiErrors,
        (status = 200, description = "The usable configurations", body = AiLlmsReply),
    ),
    security(("bearer" = [])))]
pub async fn available_ai_llms(
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<AiLlmsReply>, ApiError> {
    let list = service.available_providers(&caller).await?;
    Ok(Json(AiLlmsReply {
        success: true,
        ai_llms: list.into_iter().map(AiLlmDto::from).collect(),
    }))
}

/// Make a real call with the stored credentials (the provider's model list)
/// and record that it answered.
#[utoipa::path(post, path = "/ai/llm/{id}/validate", tag = "ai",
    params(("id" = String, Path, format = Uuid, description = "The configuration")),
    responses(
        ApiErrors,
        (status = 200, description = "The provider answered", body = ValidateReply),
        (status = 400, description = "Invalid id", body = ErrorReply),
        (status = 403, description = "Not an administrator of the workspace", body = ErrorReply),
        (status = 404, description = "AI configuration not found", body = ErrorReply),
        (status = 502, description = "The provider failed (its error, never the secret)", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn validate_ai_llm(
    Path(id): Path<String>,
    State(service): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<ValidateReply>, ApiError> {
    let id = params::uuid("id", &id)?;
    let message = service.validate_provider(&caller, id).await?;
    Ok(Json(ValidateReply {
        success: true,
        message,
    }))
}

/// The models a repository may use: those of its attached configurations.
#[utoipa::path(post, path = "/ai/models", tag = "ai",
    request_body = ModelsBody,
    responses(
        ApiErrors,
        (status = 200, description = "The models (a provider that fails is left out)", body = ModelsReply),
        (status = 400, description = "Invalid body", body = ErrorReply),
        (status = 404, description = "Repository not found", body = ErrorReply),
        (status = 413, description = "Body over 64 KiB", body = ErrorReply),
        (status = 415, description = "Content-Type is not application/json", body = ErrorReply),
    ),
    security(("bearer" = [])))]
pub async fn ai_models(
    State(service): State<AppState>,
    credentials: Credentials,
    JsonBody(body): JsonBody<ModelsBody>,
) -> Result<Json<ModelsReply>, ApiError> {
    let input = (|| {
        let kind = |name: &str, v: super::extract::JsonText| -> Result<_, ApiError> {
            v.text(name)?
                .map(|t| providers::ai_type(Some(&t)))
                .transpose()
        };
        let ai_type = kind("aiType", body.ai_type)?;
        let llm_type = kind("llmType", body.llm_type)?;
        let repo = body.repo_id.text("repoId")?.unwrap_or_default();
        Ok(ListModels {
            repo_id: params::uuid("repoId", &repo)?,
            ai_type,
            llm_type,
        })
    })();
    let (caller, input) = service.admit(&credentials, input).await?;
    let models = service.list_models(&caller, input).await?;
    Ok(Json(ModelsReply {
        success: true,
        models: models.into_iter().map(ModelDto::from).collect(),
    }))
}
