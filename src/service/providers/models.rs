//! The models a repository may use, and validating a configuration: both
//! ask the providers themselves (their model lists).

use uuid::Uuid;

use super::{ProviderView, may_manage_providers};
use crate::domain::{AiType, Caller};
use crate::error::ApiError;
use crate::provider::ProviderError;
use crate::service::Service;
use crate::store::types::now;

/// `ListModels`'s input.
#[derive(Debug, Clone)]
pub struct ListModels {
    pub repo_id: Uuid,
    /// Only configurations of this kind.
    pub ai_type: Option<AiType>,
    /// The same filter under the platform's other name (the provider's type).
    pub llm_type: Option<AiType>,
}

/// A model a repository may use, and the configuration that offers it.
#[derive(Debug, Clone)]
pub struct ModelView {
    pub id: String,
    /// When the provider made it available (Unix seconds), if it says.
    pub created: Option<i64>,
    pub ai_type: AiType,
    pub ai_llm_id: Uuid,
    /// The configuration's name.
    pub provider: String,
}

impl Service {
    /// The models of the configurations attached to a repository the caller
    /// can read, in attach order; a provider that fails is left out.
    pub async fn list_models(
        &self,
        caller: &Caller,
        input: ListModels,
    ) -> Result<Vec<ModelView>, ApiError> {
        const FAILED: &str = "Failed to list models";
        let not_found = || ApiError::NotFound("Repository not found".into());
        let repo = self.live_repo(caller, input.repo_id).await?;
        let workspace = repo.workspace_id.ok_or_else(not_found)?;
        self.workspace_access(caller, workspace)
            .await
            .map_err(|e| e.or_not_found(not_found))?;
        let wanted = |t: AiType| {
            input.ai_type.is_none_or(|w| w == t) && input.llm_type.is_none_or(|w| w == t)
        };
        let attached = self
            .store
            .configurations_of_repo(repo.id)
            .await
            .map_err(ApiError::from_store(FAILED))?;
        let mut models = Vec::new();
        let wanted = attached.into_iter().filter(|r| wanted(r.ai_type)).collect();
        for (row, offer) in self.offers(wanted).await {
            for model in offer.listed() {
                models.push(ModelView {
                    id: model.id.clone(),
                    created: model.created,
                    ai_type: row.ai_type,
                    ai_llm_id: row.id,
                    provider: row.name.clone(),
                });
            }
        }
        Ok(models)
    }

    /// Makes a real call with a configuration's stored credentials (its model
    /// list; for an AWS endpoint that lists none, a request that only checks
    /// the key) and records when it last succeeded; the provider's error,
    /// never the secret, if it fails.
    pub async fn validate_provider(&self, caller: &Caller, id: Uuid) -> Result<String, ApiError> {
        let (row, access) = self.visible_provider(caller, id).await?;
        may_manage_providers(caller, access)?;
        let provider = self.connect(&row).ok_or_else(|| ApiError::Internal {
            public: "Failed to validate the AI configuration",
            detail: format!("the secrets of AI configuration {} do not open", row.id),
        })?;
        let answer = match provider.list_models().await {
            Ok(models) => Ok(format!(
                "The provider answered: {} model(s) available",
                models.len()
            )),
            Err(ProviderError::NoModelList) if row.ai_type == AiType::Aws => provider
                .probe()
                .await
                .map(|()| "The provider accepted the credentials (it lists no models)".to_owned()),
            Err(e) => Err(e),
        };
        let answer = answer.map_err(|e| {
            self.metrics()
                .provider_failed(row.ai_type.as_str(), "validate", e.reason());
            ApiError::Upstream(e.to_string())
        })?;
        self.store
            .mark_validated(row.id, row.updated_at, now())
            .await
            .map_err(ApiError::from_store(
                "Failed to validate the AI configuration",
            ))?;
        Ok(answer)
    }

    /// The configurations the caller may see that validated and can be used.
    pub async fn available_providers(
        &self,
        caller: &Caller,
    ) -> Result<Vec<ProviderView>, ApiError> {
        let all = self
            .list_providers(caller, super::ListProviders::default())
            .await?;
        Ok(all
            .into_iter()
            .filter(|p| p.validated_at.is_some())
            .collect())
    }
}
