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
use crate::provider::{ModelInfo, Provider, ProviderError, Wire};
use crate::secrets::{Field, Sealed};
use crate::service::Service;
use crate::store::providers::AiLlmRow;

/// How long a configuration's model list is trusted.
const MODELS_TTL: Duration = Duration::from_secs(60);

/// How long a provider that failed to list its models is left out before it
/// is asked again (so a dead provider is not asked on every prompt).
const FAILED_TTL: Duration = Duration::from_secs(15);

/// A configuration, at one version (a changed one is listed again).
type Version = (Uuid, DateTime<Utc>);

/// What a configuration offers, as its provider last said.
#[derive(Clone, Debug)]
pub enum Offer {
    /// The models its provider listed.
    Models(Arc<Vec<ModelInfo>>),
    /// Any model: the endpoint lists none (Bedrock's `bedrock-runtime`);
    /// the provider itself refuses a model it does not serve.
    Any,
    /// Nothing for now: listing failed.
    Failed,
}

impl Offer {
    /// The models it names (none for [`Offer::Any`] and [`Offer::Failed`]).
    pub fn listed(&self) -> &[ModelInfo] {
        match self {
            Offer::Models(models) => models,
            Offer::Any | Offer::Failed => &[],
        }
    }

    fn ttl(&self) -> Duration {
        match self {
            Offer::Failed => FAILED_TTL,
            Offer::Models(_) | Offer::Any => MODELS_TTL,
        }
    }
}

/// Each configuration's offer as last asked, and when.
#[derive(Clone, Default)]
pub struct ModelCache(Arc<Mutex<HashMap<Version, (Instant, Offer)>>>);

impl ModelCache {
    fn get(&self, row: &AiLlmRow) -> Option<Offer> {
        let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(&(row.id, row.updated_at))
            .filter(|(at, offer)| at.elapsed() < offer.ttl())
            .map(|(_, offer)| offer.clone())
    }

    fn put(&self, row: &AiLlmRow, offer: Offer) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, (at, offer)| at.elapsed() < offer.ttl());
        cache.insert((row.id, row.updated_at), (Instant::now(), offer));
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
        let store = &self.store;
        let attached = self
            .configurations
            .get_or_load(repo_id, || async move {
                store
                    .configurations_of_repo(repo_id)
                    .await
                    .map(Arc::new)
                    .map_err(ApiError::from_store("Failed to prompt the conversation"))
            })
            .await?;
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
        // Every attached provider is asked at once (a dead one costs its
        // timeout once, not once per configuration before it).
        let mut offers = self.offers(attached.to_vec()).await;
        let listing = offers
            .iter()
            .position(|(_, offer)| offer.listed().iter().any(|m| m.id == model));
        // A configuration that lists no models takes what none lists.
        let chosen = listing.or_else(|| {
            offers
                .iter()
                .position(|(_, offer)| matches!(offer, Offer::Any))
        });
        // Only the chosen configuration's secret is opened (the others'
        // offers may all come from the cache).
        let row = chosen.map(|i| offers.swap_remove(i).0);
        let Some((provider, row)) = row.and_then(|row| Some((self.connect(&row)?, row))) else {
            return Err(ApiError::InvalidArgument(format!(
                "Model \"{model}\" is not available for this repository"
            )));
        };
        let host = provider.host();
        Ok(Route {
            provider: Arc::new(provider),
            ai_llm_id: Some(row.id),
            ai_type: Some(row.ai_type),
            host,
        })
    }

    /// What each of `rows` offers, in the same order: from the cache, or
    /// asked of its provider (all that are not cached at once); a
    /// configuration that cannot be reached (endpoint refused, secret
    /// unreadable) is left out.
    pub(super) async fn offers(&self, rows: Vec<AiLlmRow>) -> Vec<(AiLlmRow, Offer)> {
        let asked = rows.into_iter().map(|row| async move {
            if let Some(offer) = self.models.get(&row) {
                return Some((row, offer));
            }
            let provider = self.connect(&row)?;
            let offer = self.list_offer(&row, &provider).await;
            Some((row, offer))
        });
        futures_util::future::join_all(asked)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// A client for configuration `row`, or `None` (logged) if its endpoint
    /// is refused or its secrets do not open.
    pub(super) fn connect(&self, row: &AiLlmRow) -> Option<Provider> {
        let (keyring, http) = (self.keyring.as_deref()?, self.tenant_http.clone()?);
        // Stored while private endpoints were allowed, perhaps: checked again.
        if let Err(e) = crate::egress::check_url(&row.endpoint, self.allow_private) {
            tracing::warn!(ai_llm_id = %row.id, reason = %e, "configuration's endpoint refused");
            self.metrics()
                .provider_failed(row.ai_type.as_str(), "connect", "endpoint_refused");
            return None;
        }
        let sealed = Sealed {
            key_id: row.secrets_key_id.clone(),
            bytes: row.secret_sealed.clone(),
        };
        match keyring.open(&sealed, row.id, Field::Secret) {
            Ok(secret) => Some(Provider::connect(
                wire_of(row.ai_type),
                &row.endpoint,
                secret,
                http,
            )),
            Err(e) => {
                tracing::error!(ai_llm_id = %row.id, error = %e, "a configuration's secret does not open");
                self.metrics().provider_failed(
                    row.ai_type.as_str(),
                    "connect",
                    "secret_unreadable",
                );
                None
            }
        }
    }

    /// What configuration `row` offers (cached: a minute when its provider
    /// answered, less when it failed, which is logged and counted: one
    /// failing provider is not an error for all).
    async fn list_offer(&self, row: &AiLlmRow, provider: &Provider) -> Offer {
        let offer = match provider.list_models().await {
            Ok(models) => Offer::Models(Arc::new(models)),
            Err(ProviderError::NoModelList) if row.ai_type == AiType::Aws => Offer::Any,
            Err(e) => {
                tracing::warn!(ai_llm_id = %row.id, error = %e, "a provider's model list failed; left out");
                self.metrics()
                    .provider_failed(row.ai_type.as_str(), "models", e.reason());
                Offer::Failed
            }
        };
        self.models.put(row, offer.clone());
        offer
    }
}

/// The API each kind of configuration speaks: Anthropic its own Messages
/// API; the others OpenAI's Chat Completions (Gemini and Bedrock through their
/// OpenAI-compatible endpoints, each with its dialect).
pub fn wire_of(kind: AiType) -> Wire {
    match kind {
        AiType::Anthropic => Wire::Anthropic,
        AiType::Google => Wire::Gemini,
        AiType::Aws => Wire::Bedrock,
        AiType::OpenAi | AiType::Other => Wire::OpenAi,
    }
}
