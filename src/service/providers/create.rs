//! Creating a configuration: its secrets sealed before they reach the store.

use secrecy::SecretString;
use uuid::Uuid;

use super::{default_endpoint, may_manage_providers, seal_pair};
use crate::domain::{AiType, Caller};
use crate::error::ApiError;
use crate::service::audit::{self, Action, Context, Scope};
use crate::service::{RequestContext, Service};
use crate::store::StoreError;
use crate::store::providers::NewAiLlm;
use crate::store::types::{SqlTime, SqlUuid, now};

/// `CreateProvider`'s input.
#[derive(Debug, Clone)]
pub struct CreateProvider {
    pub workspace_id: Uuid,
    pub name: String,
    pub ai_type: AiType,
    /// The API base; empty for the public API of `ai_type`.
    pub endpoint: String,
    /// An access key, where the provider has one (AWS).
    pub key: Option<SecretString>,
    /// The API key or secret.
    pub secret: SecretString,
}

impl Service {
    /// Creates a configuration in a workspace the caller manages; returns its id.
    pub async fn create_provider(
        &self,
        caller: &Caller,
        input: CreateProvider,
        ctx: &RequestContext,
    ) -> Result<Uuid, ApiError> {
        let endpoint = match input.endpoint.trim() {
            "" => default_endpoint(input.ai_type).ok_or_else(|| {
                ApiError::InvalidArgument(
                    "endpoint is required for AWS and OTHER configurations".into(),
                )
            })?,
            given => given,
        };
        let endpoint = self.endpoint(endpoint)?;
        let (workspace, access) = self.workspace_access(caller, input.workspace_id).await?;
        may_manage_providers(caller, access)?;
        let keyring = self.keyring()?;
        let id = Uuid::now_v7();
        let at = now();
        let (key, secret) = seal_pair(keyring, id, input.key.as_ref(), &input.secret);
        let row = NewAiLlm {
            id: SqlUuid(id),
            org_id: SqlUuid(workspace.org_id),
            workspace_id: SqlUuid(workspace.id),
            created_by: SqlUuid(caller.user_id),
            name: input.name.clone(),
            ai_type: input.ai_type.as_str().to_owned(),
            endpoint: endpoint.clone(),
            key_sealed: key.map(|k| k.bytes),
            secrets_key_id: secret.key_id,
            secret_sealed: secret.bytes,
            validated_at: None,
            created_at: SqlTime(at),
            updated_at: SqlTime(at),
        };
        let mut data = serde_json::Map::new();
        data.insert("name".into(), input.name.into());
        data.insert("aiType".into(), input.ai_type.as_str().into());
        data.insert("endpoint".into(), endpoint.into());
        let scope = Scope {
            org_id: workspace.org_id,
            workspace_id: Some(workspace.id),
            user_id: caller.user_id,
        };
        let event = audit::event(scope, Context::AiLlm, id, Action::Created, data, ctx, at);
        match self.store.create_ai_llm(row, event).await {
            Ok(()) => Ok(id),
            Err(StoreError::Conflict(_)) => Err(ApiError::AlreadyExists(
                "An AI configuration with this name already exists in the workspace".into(),
            )),
            Err(e) => Err(ApiError::from_store(
                "Failed to create the AI configuration",
            )(e)),
        }
    }
}
