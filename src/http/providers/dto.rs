//! The JSON of the provider configuration routes: the platform's bodies and
//! its AiLlmDTO (secrets never included; `key` null or masked).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::http::conversations::dto::rfc3339;
use crate::http::extract::JsonText;
use crate::service::providers::{MASKED_KEY, ModelView, ProviderView};

/// The kinds of configuration, for the document.
#[derive(ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum AiTypeName {
    OPENAI,
    GOOGLE,
    ANTHROPIC,
    AWS,
    OTHER,
}

/// `POST /ai/llm`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateAiLlmBody {
    /// Unique within the workspace.
    #[serde(default)]
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"\S", required = true)]
    pub name: JsonText,
    /// `OPENAI`, `GOOGLE`, `ANTHROPIC`, `AWS` or `OTHER`.
    #[serde(default)]
    #[schema(value_type = AiTypeName, required = true)]
    pub ai_type: JsonText,
    /// The provider's API base: http(s) with a host name (IP literals are
    /// refused unless the operator allows private endpoints). Absent or null:
    /// the provider's public API (OPENAI, ANTHROPIC, GOOGLE; AWS and OTHER
    /// need one).
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = r"^https?://[A-Za-z][A-Za-z0-9.-]*[A-Za-z0-9](:[0-9]{1,4})?(/[^\s?#]*)?$")]
    pub endpoint: JsonText,
    /// An access key, where the provider has one (AWS).
    #[serde(default)]
    #[schema(value_type = String, pattern = r"\S")]
    pub key: JsonText,
    /// The API key or secret; stored encrypted, never returned.
    #[serde(default)]
    #[schema(value_type = String, pattern = r"\S", required = true)]
    pub secret: JsonText,
    /// The workspace that owns the configuration.
    #[serde(default)]
    #[schema(value_type = String, format = Uuid, required = true)]
    pub workspace_id: JsonText,
}

/// `PUT /ai/llm/{id}`: at least one of these (other fields, such as the
/// client's `apiKeyUuid`, are ignored).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateAiLlmBody {
    #[serde(default)]
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: JsonText,
    #[serde(default)]
    #[schema(value_type = AiTypeName)]
    pub ai_type: JsonText,
    #[serde(default)]
    #[schema(value_type = String, pattern = r"^https?://[A-Za-z][A-Za-z0-9.-]*[A-Za-z0-9](:[0-9]{1,4})?(/[^\s?#]*)?$")]
    pub endpoint: JsonText,
    #[serde(default)]
    #[schema(value_type = String, pattern = r"\S")]
    pub key: JsonText,
    #[serde(default)]
    #[schema(value_type = String, pattern = r"\S")]
    pub secret: JsonText,
}

/// `POST /ai/llm/{id}/repos`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachBody {
    #[serde(default)]
    #[schema(value_type = String, format = Uuid, required = true)]
    pub repo_id: JsonText,
}

/// The query of `GET /ai/llm`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct ListAiLlmsQuery {
    /// Only this workspace's.
    #[param(format = Uuid)]
    pub workspace_id: Option<String>,
}

/// A configuration's id.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiLlmIdReply {
    /// Always `true`.
    pub success: bool,
    #[schema(format = Uuid)]
    pub ai_llm_id: String,
}

/// The configurations the caller may see.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiLlmsReply {
    /// Always `true`.
    pub success: bool,
    pub ai_llms: Vec<AiLlmDto>,
}

/// The platform's AiLlmDTO.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiLlmDto {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub org_id: String,
    #[schema(format = Uuid)]
    pub workspace_id: String,
    /// Who created it.
    #[schema(format = Uuid)]
    pub user_id: String,
    pub name: String,
    pub ai_type: String,
    pub endpoint: String,
    /// Null, or masked when an access key is stored; never the key.
    pub key: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub repos: Vec<AttachedRepoDto>,
}

/// A repository attached to a configuration.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachedRepoDto {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    /// When it was attached.
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<ProviderView> for AiLlmDto {
    fn from(p: ProviderView) -> Self {
        AiLlmDto {
            id: p.id.to_string(),
            org_id: p.org_id.to_string(),
            workspace_id: p.workspace_id.to_string(),
            user_id: p.created_by.to_string(),
            name: p.name,
            ai_type: p.ai_type.as_str().to_owned(),
            endpoint: p.endpoint,
            key: p.has_key.then(|| MASKED_KEY.to_owned()),
            created_at: rfc3339(p.created_at),
            repos: p
                .repos
                .into_iter()
                .map(|r| AttachedRepoDto {
                    id: r.repo_id.to_string(),
                    name: r.name,
                    created_at: rfc3339(r.attached_at),
                })
                .collect(),
        }
    }
}

/// `POST /ai/models`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelsBody {
    /// The repository whose attached configurations are asked.
    #[serde(default)]
    #[schema(value_type = String, format = Uuid, required = true)]
    pub repo_id: JsonText,
    /// Only configurations of this kind.
    #[serde(default)]
    #[schema(value_type = AiTypeName)]
    pub ai_type: JsonText,
    /// The same filter by the provider's type.
    #[serde(default)]
    #[schema(value_type = AiTypeName)]
    pub llm_type: JsonText,
}

/// The models a repository may use.
#[derive(Serialize, ToSchema)]
pub struct ModelsReply {
    /// Always `true`.
    pub success: bool,
    pub models: Vec<ModelDto>,
}

/// A model, and the configuration that offers it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDto {
    /// The model, as the prompt's `model` names it.
    pub id: String,
    pub name: String,
    /// When the provider made it available (Unix seconds), if it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    /// The configuration's kind.
    pub ai_type: String,
    /// The provider's type (the same as `aiType`).
    pub llm_type: String,
    /// The configuration's name.
    pub llm_provider: String,
}

impl From<ModelView> for ModelDto {
    fn from(m: ModelView) -> Self {
        ModelDto {
            name: m.id.clone(),
            id: m.id,
            created: m.created,
            ai_type: m.ai_type.as_str().to_owned(),
            llm_type: m.ai_type.as_str().to_owned(),
            llm_provider: m.provider,
        }
    }
}

/// A validation that succeeded.
#[derive(Serialize, ToSchema)]
pub struct ValidateReply {
    /// Always `true`.
    pub success: bool,
    /// What the provider answered.
    pub message: String,
}
