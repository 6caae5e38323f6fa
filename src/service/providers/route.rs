//! Routing a prompt: its model goes to the first configuration attached to
//! the conversation's repository (by attach time) that offers it; a
//! repository with none uses the operator's provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::AiType;
use crate::error::ApiError;
use crate::provider::{Provider, Wire};
use crate::secrets::Sealed;
use crate::service::Service;
use crate::store::providers::AiLlmRow;

/// How long a configuration's model list is trusted.
const MODELS_TTL: Duration = Duration::from_secs(60);

/// A configuration, at one version (a changed one is listed again).
type Version = (Uuid, DateTime<Utc>);

/// A model list and when it was read.
type Listed = (Instant, Arc<Vec<String>>);

/// Each configuration's models as last listed.
#[derive(Clone, Default)]
pub struct ModelCache(Arc<Mutex<HashMap<Version, Listed>>>);

impl ModelCache {
    fn get(&self, row: &AiLlmRow) -> Option<Arc<Vec<String>>> {
        let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(&(row.id, row.updated_at))
            .filter(|(at, _)| at.elapsed() < MODELS_TTL)
            .map(|(_, models)| models.clone())
    }

    fn put(&self, row: &AiLlmRow, models: Arc<Vec<String>>) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, (at, _)| at.elapsed() < MODELS_TTL);
        cache.insert((row.id, row.updated_at), (Instant::now(), models));
    }
}

/// Where a prompt goes, and who that is (for the stored message).
pub struct Route {
    pub provider: Arc<Provider>,
    /// The configuration, or `None` for the operator's provider.
    pub ai_llm_id: Option<Uuid>,
    pub ai_type: Option<AiType>,
    pub host: Option<String>,
}

impl Service {
    /// The provider `model` goes to for a conversation on `repo_id`.
    pub(crate) async fn route(&self, repo_id: Uuid, model: &str) -> Result<Route, ApiError> {
        let attached = self
            .store
            .configurations_of_repo(repo_id)
            .await
            .map_err(ApiError::from_store("Failed to prompt the conversation"))?;
        if attached.is_empty() {
            let provider = self.provider.clone().ok_or_else(|| {
                ApiError::InvalidArgument("No AI provider is attached to this repository".into())
            })?;
            if !provider.allows(model) {
                return Err(ApiError::InvalidArgument(
                    "model is not one of the allowed models".into(),
                ));
            }
            let host = provider.host();
            return Ok(Route {
                provider,
                ai_llm_id: None,
                ai_type: None,
                host,
            });
        }
        for row in attached {
            let Some(provider) = self.connect(&row) else {
                continue;
            };
            if self
                .models_of(&row, &provider)
                .await
                .iter()
                .any(|m| m == model)
            {
                let host = provider.host();
                return Ok(Route {
                    provider: Arc::new(provider),
                    ai_llm_id: Some(row.id),
                    ai_type: Some(row.ai_type),
                    host,
                });
            }
        }
        Err(ApiError::InvalidArgument(format!(
            "Model \"{model}\" is not available for this repository"
        )))
    }

    /// A client for configuration `row`, or `None` (logged) if its endpoint
    /// is refused or its secrets do not open.
    pub(super) fn connect(&self, row: &AiLlmRow) -> Option<Provider> {
        let (keyring, http) = (self.keyring.as_deref()?, self.tenant_http.clone()?);
        // Stored while private endpoints were allowed, perhaps: checked again.
        if let Err(e) = crate::egress::check_url(&row.endpoint, self.allow_private) {
            tracing::warn!(ai_llm_id = %row.id, reason = %e, "configuration's endpoint refused");
            return None;
        }
        let sealed = Sealed {
            key_id: row.secrets_key_id.clone(),
            bytes: row.secret_sealed.clone(),
        };
        match keyring.open(&sealed, row.id) {
            Ok(secret) => Some(Provider::connect(
                wire_of(row.ai_type),
                &row.endpoint,
                secret,
                http,
            )),
            Err(e) => {
                tracing::error!(ai_llm_id = %row.id, error = %e, "a configuration's secret does not open");
                None
            }
        }
    }

    /// The models configuration `row` offers (cached a minute); none if its
    /// provider fails (logged: one failing provider is not an error for all).
    pub(super) async fn models_of(&self, row: &AiLlmRow, provider: &Provider) -> Arc<Vec<String>> {
        if let Some(models) = self.models.get(row) {
            return models;
        }
        match provider.list_models().await {
            Ok(models) => {
                let models = Arc::new(models);
                self.models.put(row, models.clone());
                models
            }
            Err(e) => {
                tracing::warn!(ai_llm_id = %row.id, error = %e, "a provider's model list failed; left out");
                Arc::default()
            }
        }
    }
}

/// The API each kind of configuration speaks: Anthropic its own Messages
/// API; the others OpenAI's Chat Completions (Gemini and Bedrock through their
/// OpenAI-compatible endpoints).
pub fn wire_of(kind: AiType) -> Wire {
    match kind {
        AiType::Anthropic => Wire::Anthropic,
        AiType::OpenAi | AiType::Google | AiType::Aws | AiType::Other => Wire::OpenAi,
    }
}
