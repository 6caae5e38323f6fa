//! Changing a configuration: any of its name, kind, endpoint and secrets.
//! A new endpoint or credential means it must validate again.

use secrecy::SecretString;
use uuid::Uuid;

use super::{may_manage_providers, provider_not_found};
use crate::domain::{AiType, Caller};
use crate::error::ApiError;
use crate::service::audit::{self, Action, Context, Scope};
use crate::service::{RequestContext, Service};
use crate::store::StoreError;
use crate::store::providers::AiLlmChanges;
use crate::store::types::{SqlTime, now};

/// `UpdateProvider`'s input: what to change (`None`: unchanged).
#[derive(Debug, Clone)]
pub struct UpdateProvider {
    pub id: Uuid,
    pub name: Option<String>,
    pub ai_type: Option<AiType>,
    pub endpoint: Option<String>,
    pub key: Option<SecretString>,
    pub secret: Option<SecretString>,
}

impl UpdateProvider {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.ai_type.is_none()
            && self.endpoint.is_none()
            && self.key.is_none()
            && self.secret.is_none()
    }
}

impl Service {
    /// Changes a configuration of a workspace the caller manages.
    pub async fn update_provider(
        &self,
        caller: &Caller,
        input: UpdateProvider,
        ctx: &RequestContext,
    ) -> Result<Uuid, ApiError> {
        if input.is_empty() {
            return Err(ApiError::InvalidArgument(
                "Nothing to update: give name, aiType, endpoint, key or secret".into(),
            ));
        }
        let endpoint = input
            .endpoint
            .as_deref()
            .map(|e| self.endpoint(e))
            .transpose()?;
        let (row, access) = self.visible_provider(caller, input.id).await?;
        may_manage_providers(caller, access)?;
        // The stored secret goes wherever the endpoint points: moving it (or
        // changing the API it is sent to) takes the secret again, so that
        // whoever may edit a configuration cannot send its key elsewhere.
        if (input.endpoint.is_some() || input.ai_type.is_some()) && input.secret.is_none() {
            return Err(ApiError::InvalidArgument(
                "Changing endpoint or aiType needs the secret again".into(),
            ));
        }
        let at = now();
        let mut changes = AiLlmChanges {
            name: input.name.clone(),
            ai_type: input.ai_type.map(|t| t.as_str().to_owned()),
            endpoint: endpoint.clone(),
            updated_at: Some(SqlTime(at)),
            ..AiLlmChanges::default()
        };
        if input.key.is_some() || input.secret.is_some() {
            self.reseal(&row, input.key, input.secret, &mut changes)?;
        }
        if changes.endpoint.is_some()
            || changes.ai_type.is_some()
            || changes.secret_sealed.is_some()
        {
            changes.validated_at = Some(None);
        }
        let mut data = serde_json::Map::new();
        let changed: Vec<&str> = [
            ("name", input.name.is_some()),
            ("aiType", input.ai_type.is_some()),
            ("endpoint", endpoint.is_some()),
            ("credentials", changes.secret_sealed.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, yes)| yes.then_some(name))
        .collect();
        data.insert("changed".into(), changed.into());
        let scope = Scope {
            org_id: row.org_id,
            workspace_id: Some(row.workspace_id),
            user_id: caller.user_id,
        };
        let event = audit::event(
            scope,
            Context::AiLlm,
            row.id,
            Action::Updated,
            data,
            ctx,
            at,
        );
        let updated = self.store.update_ai_llm(row.id, changes, event).await;
        // Its repositories' turns read it again.
        self.configurations.changed();
        match updated {
            Ok(true) => Ok(row.id),
            Ok(false) => Err(provider_not_found()),
            Err(StoreError::Conflict(_)) => Err(ApiError::AlreadyExists(
                "An AI configuration with this name already exists in the workspace".into(),
            )),
            Err(e) => Err(ApiError::from_store(
                "Failed to update the AI configuration",
            )(e)),
        }
    }

    /// Seals new credentials into `changes`. Both sealed values carry one key
    /// id, so the one that is kept is opened and sealed again with the
    /// current key too.
    fn reseal(
        &self,
        row: &crate::store::providers::AiLlmRow,
        new_key: Option<SecretString>,
        new_secret: Option<SecretString>,
        changes: &mut AiLlmChanges,
    ) -> Result<(), ApiError> {
        let keyring = self.keyring()?;
        // The stored values are opened only when one of them is kept (so
        // giving both anew mends a configuration whose values no longer open).
        let (key, secret) = match (new_key, new_secret) {
            (key, Some(secret)) if key.is_some() || row.key_sealed.is_none() => (key, secret),
            (new_key, new_secret) => {
                let (old_key, old_secret) =
                    super::open_pair(keyring, row).map_err(|e| ApiError::Internal {
                        public: "Failed to update the AI configuration",
                        detail: e.to_string(),
                    })?;
                (new_key.or(old_key), new_secret.unwrap_or(old_secret))
            }
        };
        let (key, secret) = super::seal_pair(keyring, row.id, key.as_ref(), &secret);
        changes.key_sealed = Some(key.map(|k| k.bytes));
        changes.secrets_key_id = Some(secret.key_id);
        changes.secret_sealed = Some(secret.bytes);
        Ok(())
    }
}
