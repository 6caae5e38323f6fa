//! Model provider configurations ("AI LLMs"): a workspace's connections to
//! model providers, their sealed secrets, and the repositories attached to
//! them. Who may see and who may manage them is named here.

mod attach;
mod create;
mod delete;
mod list;
mod models;
mod route;
mod update;

pub use attach::{AttachRepo, DetachRepo};
pub use create::CreateProvider;
pub use list::ListProviders;
pub use models::{ListModels, ModelView};
pub use route::{ModelCache, Route};
pub use update::UpdateProvider;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use crate::domain::{Access, AiType, Caller};
use crate::egress;
use crate::error::ApiError;
use crate::secrets::{Field, Keyring, Sealed, SecretsError};
use crate::service::Service;
use crate::store::providers::{AiLlmRow, AttachedRepo, RepoRow, WorkspaceRow};

/// A configuration as the operations return it: never its secrets.
#[derive(Debug, Clone)]
pub struct ProviderView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub created_by: Uuid,
    pub name: String,
    pub ai_type: AiType,
    pub endpoint: String,
    /// Whether an access key is stored (it is shown masked, never in full).
    pub has_key: bool,
    pub validated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub repos: Vec<AttachedRepo>,
}

impl ProviderView {
    fn of(row: AiLlmRow, repos: Vec<AttachedRepo>) -> Self {
        ProviderView {
            id: row.id,
            org_id: row.org_id,
            workspace_id: row.workspace_id,
            created_by: row.created_by,
            name: row.name,
            ai_type: row.ai_type,
            endpoint: row.endpoint,
            has_key: row.key_sealed.is_some(),
            validated_at: row.validated_at,
            created_at: row.created_at,
            repos,
        }
    }
}

/// What the mask of a stored access key looks like.
pub const MASKED_KEY: &str = "********";

/// Who may see a workspace's configurations (never their secrets):
/// organization administrators and owners, and any member of the workspace.
pub fn may_see_providers(caller: &Caller, access: Option<Access>) -> bool {
    caller.role.is_org_admin() || access.is_some()
}

/// Who may create, change, delete and attach a workspace's configurations:
/// organization administrators and owners, and the workspace's ADMIN members.
pub fn may_manage_providers(caller: &Caller, access: Option<Access>) -> Result<(), ApiError> {
    if caller.role.is_org_admin() || access == Some(Access::Admin) {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(
            "Insufficient permissions for this workspace".into(),
        ))
    }
}

/// A configuration's name: 1 to 200 characters after trimming.
pub fn provider_name(name: Option<String>) -> Result<String, ApiError> {
    let name = name.map(|n| n.trim().to_owned()).unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::InvalidArgument("name is required".into()));
    }
    if name.chars().count() > 200 {
        return Err(ApiError::InvalidArgument(
            "name must be at most 200 characters".into(),
        ));
    }
    Ok(name)
}

/// A configuration's kind: one of the platform's names.
pub fn ai_type(value: Option<&str>) -> Result<AiType, ApiError> {
    let value = value.ok_or_else(|| ApiError::InvalidArgument("aiType is required".into()))?;
    value.parse().map_err(|_| {
        ApiError::InvalidArgument(
            "aiType must be one of OPENAI, GOOGLE, ANTHROPIC, AWS, OTHER".into(),
        )
    })
}

/// A non-empty secret value (an API key or an access key).
pub fn secret_value(name: &str, value: Option<String>) -> Result<Option<SecretString>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Err(ApiError::InvalidArgument(format!(
            "{name} must not be empty"
        ))),
        Some(v) => Ok(Some(SecretString::from(v))),
    }
}

/// What an id that names no configuration the caller may see answers.
fn provider_not_found() -> ApiError {
    ApiError::NotFound("AI configuration not found".into())
}

impl Service {
    /// The keyring, or why configurations cannot be stored.
    pub(crate) fn keyring(&self) -> Result<&Keyring, ApiError> {
        self.keyring.as_deref().ok_or_else(|| {
            ApiError::Unimplemented(
                "No secrets key is configured on this service (--secrets-key-file or SECRETS_KEY)"
                    .into(),
            )
        })
    }

    /// An endpoint a tenant gives, as the egress policy allows it.
    fn endpoint(&self, endpoint: &str) -> Result<String, ApiError> {
        if endpoint.trim().is_empty() {
            return Err(ApiError::InvalidArgument("endpoint is required".into()));
        }
        egress::check_url(endpoint, self.allow_private)
            .map(|url| url.to_string())
            .map_err(|e| ApiError::InvalidArgument(e.to_string()))
    }

    /// Workspace `id` of the caller's organization and the caller's access to
    /// it; 404 for one that is not there (or not theirs).
    pub(crate) async fn workspace_access(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<(WorkspaceRow, Option<Access>), ApiError> {
        const FAILED: &str = "Failed to read the workspace";
        let workspace = self
            .store
            .find_workspace(id)
            .await
            .map_err(ApiError::from_store(FAILED))?
            .filter(|w| w.org_id == caller.org_id && w.deleted_at.is_none())
            .ok_or_else(|| ApiError::NotFound("Workspace not found".into()))?;
        let access = self
            .store
            .membership(id, caller.user_id)
            .await
            .map_err(ApiError::from_store(FAILED))?;
        if !may_see_providers(caller, access) {
            return Err(ApiError::NotFound("Workspace not found".into()));
        }
        Ok((workspace, access))
    }

    /// Repository `id` of the caller's organization, not deleted; 404
    /// otherwise (ids of other tenants reveal nothing).
    pub(crate) async fn live_repo(&self, caller: &Caller, id: Uuid) -> Result<RepoRow, ApiError> {
        self.store
            .find_repo(id)
            .await
            .map_err(ApiError::from_store("Failed to read the repository"))?
            .filter(|r| r.org_id == caller.org_id && r.deleted_at.is_none())
            .ok_or_else(|| ApiError::NotFound("Repository not found".into()))
    }

    /// Configuration `id` as `caller` may see it, with their access to its
    /// workspace.
    async fn visible_provider(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<(AiLlmRow, Option<Access>), ApiError> {
        let row = self
            .store
            .find_ai_llm(id)
            .await
            .map_err(ApiError::from_store("Failed to read the AI configuration"))?
            .filter(|r| r.org_id == caller.org_id)
            .ok_or_else(provider_not_found)?;
        let (_, access) = self
            .workspace_access(caller, row.workspace_id)
            .await
            .map_err(|e| e.or_not_found(provider_not_found))?;
        Ok((row, access))
    }
}

/// The public API of a kind of provider, for a configuration created without
/// an endpoint (AWS's is regional and OTHER's anyone's: they need one).
pub fn default_endpoint(kind: AiType) -> Option<&'static str> {
    match kind {
        AiType::OpenAi => Some("https://api.openai.com/v1"),
        AiType::Anthropic => Some("https://api.anthropic.com"),
        AiType::Google => Some("https://generativelanguage.googleapis.com/v1beta/openai"),
        AiType::Aws | AiType::Other => None,
    }
}

/// Seals an access key and an API key together (one key id for both).
pub(crate) fn seal_pair(
    keyring: &Keyring,
    owner: Uuid,
    key: Option<&SecretString>,
    secret: &SecretString,
) -> (Option<Sealed>, Sealed) {
    (
        key.map(|k| keyring.seal(k, owner, Field::Key)),
        keyring.seal(secret, owner, Field::Secret),
    )
}

/// Opens a stored configuration's access key (if any) and API key.
pub(crate) fn open_pair(
    keyring: &Keyring,
    row: &AiLlmRow,
) -> Result<(Option<SecretString>, SecretString), SecretsError> {
    let sealed = |bytes: Vec<u8>| Sealed {
        key_id: row.secrets_key_id.clone(),
        bytes,
    };
    let key = row
        .key_sealed
        .clone()
        .map(|k| keyring.open(&sealed(k), row.id, Field::Key))
        .transpose()?;
    let secret = keyring.open(&sealed(row.secret_sealed.clone()), row.id, Field::Secret)?;
    Ok((key, secret))
}
