//! The transport-neutral core: every operation of the API as a method of
//! [`Service`], taking the caller (or, for a create, its [`Credentials`]) and
//! a typed, validated input, and returning a typed view or an [`ApiError`].
//!
//! No protobuf type and no HTTP type is used here. The gRPC adapter
//! (`crate::grpc`) and the REST adapter (`crate::http`) each read their
//! request into these inputs with the same parsers ([`params`]) and map the
//! result back, so the two transports cannot disagree about a rule.
//!
//! Every operation follows the same order: authenticate, validate, find,
//! check state, authorize, act. Rules are named functions in the resource's
//! module (`conversations::may_delete_conversation`, ...).

pub mod audit;
pub mod auth;
pub mod cache;
pub mod conversations;
pub mod events;
pub mod idempotency;
pub mod messages;
pub mod params;
pub mod policies;
pub mod providers;
pub mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use auth::Credentials;

use crate::auth::jwt::JwtVerifier;
use crate::domain::Transport;
use crate::metrics::Metrics;
use crate::provider::Provider;
use crate::secrets::Keyring;
use crate::store::Store;
use uuid::Uuid;

/// How long an idempotency key is remembered by default.
pub const DEFAULT_IDEMPOTENCY_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Per-call facts an operation records: the request id (the caller's when
/// sane, made otherwise) and the transport it came in on.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub transport: Transport,
}

/// Why the service is not ready to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// A shutdown has begun.
    ShuttingDown,
    /// The database does not answer.
    Database,
    /// The database answers but cannot write: its disk is full.
    DiskFull,
}

/// The service: the store, the credentials it accepts, the model provider,
/// and the rules.
#[derive(Clone)]
pub struct Service {
    store: Store,
    jwt: Option<Arc<JwtVerifier>>,
    metrics: Arc<Metrics>,
    draining: Arc<AtomicBool>,
    idempotency_ttl: chrono::TimeDelta,
    provider: Option<Arc<Provider>>,
    keyring: Option<Arc<Keyring>>,
    allow_private: bool,
    /// The client for tenants' providers (`crate::egress::client`).
    tenant_http: Option<reqwest::Client>,
    /// Each configuration's model list, for a short while.
    models: providers::ModelCache,
    /// Each repository's policies, for a short while.
    policy_cache: policies::PolicyCache,
    /// Each repository's provider configurations, for a short while.
    configurations: cache::ReadCache<Uuid, Arc<Vec<crate::store::providers::AiLlmRow>>>,
    /// The budgets over each workspace (its own and its organization's),
    /// for a short while.
    budget_cache: cache::ReadCache<(Uuid, Uuid), Arc<Vec<crate::store::budgets::BudgetRow>>>,
    /// The latest messages of the conversations prompted lately.
    contexts: messages::ContextCache,
    /// How policies are judged.
    policy_config: policies::PolicyConfig,
    /// The judge's provider (`--policy-judge-url`); the turn's own when `None`.
    judge_provider: Option<Arc<Provider>>,
    /// How prompts hold tokens on budgets.
    budget_config: usage::budgets::BudgetConfig,
    /// How long streamed prompts' logs are kept.
    stream_config: messages::StreamConfig,
}

impl Service {
    /// The service over `store`, accepting JWTs too when `jwt` is given.
    pub fn new(store: Store, jwt: Option<Arc<JwtVerifier>>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            jwt,
            metrics,
            draining: Arc::new(AtomicBool::new(false)),
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
            provider: None,
            keyring: None,
            allow_private: false,
            tenant_http: None,
            models: providers::ModelCache::default(),
            policy_cache: policies::PolicyCache::default(),
            configurations: cache::ReadCache::default(),
            budget_cache: cache::ReadCache::default(),
            contexts: messages::ContextCache::new(messages::MAX_CONTEXT_MESSAGES),
            policy_config: policies::PolicyConfig::default(),
            judge_provider: None,
            budget_config: usage::budgets::BudgetConfig::default(),
            stream_config: messages::StreamConfig::default(),
        }
    }

    /// How long a streamed prompt's events are kept for resuming once it is
    /// done, and how long a running one may take.
    pub fn with_streams(mut self, config: messages::StreamConfig) -> Self {
        self.stream_config = config;
        self
    }

    /// How prompts hold tokens on budgets: the reply's allowance and how
    /// long a hold lasts at most.
    pub fn with_budgets(mut self, config: usage::budgets::BudgetConfig) -> Self {
        self.budget_config = config;
        self
    }

    /// How policies are judged: the judge's endpoint, model and key (the
    /// turn's own provider and model when none), its time limit, and how
    /// often a streamed reply is checked.
    pub fn with_policies(mut self, config: policies::PolicyConfig) -> anyhow::Result<Self> {
        if let Some(url) = &config.judge_url {
            // The prompt's model is a tenant's: the operator's judge needs its own.
            anyhow::ensure!(
                config.judge_model.is_some(),
                "--policy-judge-url needs --policy-judge-model"
            );
            reqwest::Url::parse(url)
                .map_err(|e| anyhow::anyhow!("--policy-judge-url {url:?} is not a URL: {e}"))?;
        }
        self.judge_provider = Provider::new(&crate::provider::ProviderConfig {
            base_url: config.judge_url.clone(),
            api_key: config.judge_api_key.clone(),
            models: Vec::new(),
            timeout: config.judge_timeout,
        })?
        .map(Arc::new);
        self.policy_config = config;
        Ok(self)
    }

    /// The client prompts reach tenants' providers with.
    pub fn with_tenant_client(mut self, client: reqwest::Client) -> Self {
        self.tenant_http = Some(client);
        self
    }

    /// The keys that seal tenants' secrets (none: configurations cannot be
    /// created).
    pub fn with_keyring(mut self, keyring: Option<Keyring>) -> Self {
        self.keyring = keyring.map(Arc::new);
        self
    }

    /// Whether tenants' endpoints may reach private and loopback addresses.
    pub fn with_private_endpoints(mut self, allow: bool) -> Self {
        self.allow_private = allow;
        self
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

    /// The keys that seal tenants' secrets, for what works beside the
    /// operations (the webhook deliverer).
    pub fn keyring_handle(&self) -> Option<Keyring> {
        self.keyring.as_deref().cloned()
    }

    /// Marks the service as shutting down: readiness fails from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The store, for what serves beside the operations (metrics, health).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether requests can be served: not shutting down, the database
    /// answers, and writes do not fail for want of disk space. What readiness
    /// reports.
    pub async fn ready(&self) -> Result<(), NotReady> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(NotReady::ShuttingDown);
        }
        self.store.check().await.map_err(|e| {
            tracing::debug!(error = %e, "not ready");
            if self.store.writes_failing() {
                NotReady::DiskFull
            } else {
                NotReady::Database
            }
        })
    }
}
