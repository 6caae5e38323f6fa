//! The JSON of the policy routes: the platform's bodies, its PolicyDTO,
//! PolicyViolationDTO and PolicyAlertDTO, and our webhook's.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::http::conversations::dto::rfc3339;
use crate::http::extract::{JsonText, QueryBool, QueryInt};
use crate::service::policies::{DeliveryView, Person, PolicyView, ViolationView, WebhookView};

/// `POST /policy`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatePolicyBody {
    #[serde(default)]
    #[schema(value_type = String, min_length = 1, max_length = 200, required = true, pattern = r"^[^\u0000]*$")]
    pub name: JsonText,
    /// What is prohibited or required, why, examples, exceptions (judged by
    /// the model). May be empty when `patterns` decide the policy.
    #[serde(default)]
    #[schema(value_type = String, min_length = 1, max_length = 10000, required = true, pattern = r"^[^\u0000]*$")]
    pub content: JsonText,
    #[serde(default)]
    #[schema(value_type = RiskTypeName, required = true)]
    pub risk_type: JsonText,
    /// 0 log, 1 alert, 2 block.
    #[serde(default)]
    #[schema(value_type = i32, minimum = 0, maximum = 2, required = true)]
    pub action_type: Value,
    #[serde(default)]
    #[schema(value_type = String, format = Uuid, required = true)]
    pub org_id: JsonText,
    /// A workspace policy's workspace (and a repository policy's).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub workspace_id: JsonText,
    /// A repository policy's repository; it belongs to `workspaceId`, which
    /// may be left out (the repository's).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub repo_id: JsonText,
    /// Our extension: regular expressions (at most 20, Rust `regex` syntax;
    /// the document shows literal words only) that decide the policy without
    /// a model.
    #[serde(default)]
    #[schema(value_type = Option<Vec<PatternText>>, max_items = 20)]
    pub patterns: Value,
}

/// `PUT /policy/{id}`: any of these, at least one; the scope never changes.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePolicyBody {
    #[serde(default)]
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"^[^\u0000]*\S[^\u0000]*$")]
    pub name: JsonText,
    #[serde(default)]
    #[schema(value_type = String, min_length = 1, max_length = 10000, pattern = r"^[^\u0000]*$")]
    pub content: JsonText,
    #[serde(default)]
    #[schema(value_type = RiskTypeName)]
    pub risk_type: JsonText,
    #[serde(default)]
    #[schema(value_type = i32, minimum = 0, maximum = 2)]
    pub action_type: Value,
    #[serde(default)]
    #[schema(value_type = Vec<PatternText>, max_items = 20)]
    pub patterns: Value,
    /// Refused (400): a policy's scope never changes.
    #[serde(default)]
    #[schema(ignore)]
    pub org_id: Value,
    #[serde(default)]
    #[schema(ignore)]
    pub workspace_id: Value,
    #[serde(default)]
    #[schema(ignore)]
    pub repo_id: Value,
}

/// A pattern, as the document shows it (any regular expression is taken).
#[derive(ToSchema)]
#[schema(value_type = String, pattern = r"^[A-Za-z0-9 _.-]{1,100}$")]
pub struct PatternText(#[allow(dead_code)] String);

/// The risk levels, for the document.
#[derive(ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum RiskTypeName {
    LOW,
    MEDIUM,
    HIGH,
}

/// A JSON number field meant to be an integer; absent or null is `None`.
pub fn integer(name: &str, value: &Value) -> Result<Option<i64>, ApiError> {
    match value {
        Value::Null => Ok(None),
        v => v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| ApiError::InvalidArgument(format!("{name} must be an integer"))),
    }
}

/// A JSON field meant to be a list of strings; absent or null is `None`.
pub fn strings(name: &str, value: Value) -> Result<Option<Vec<String>>, ApiError> {
    let bad = || ApiError::InvalidArgument(format!("{name} must be a list of strings"));
    match value {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        _ => Err(bad()),
    }
}

/// `GET /policy`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct ListPoliciesQuery {
    /// Required: the caller's organization.
    #[param(format = Uuid, required = true)]
    pub org_id: Option<String>,
    /// A workspace's policies (not the organization's own).
    #[param(format = Uuid)]
    pub workspace_id: Option<String>,
    /// A repository's policies (with its `workspaceId`).
    #[param(format = Uuid)]
    pub repo_id: Option<String>,
}

/// `GET /policy/violations`, `/policy/alerts` and their per-policy forms.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct ViolationsQuery {
    #[param(format = Uuid)]
    pub workspace_id: Option<String>,
    #[param(format = Uuid)]
    pub repo_id: Option<String>,
    #[param(format = Uuid)]
    pub policy_id: Option<String>,
    /// ISO 8601 date or date-time, inclusive.
    #[param(schema_with = crate::http::conversations::dto::time_bound)]
    pub from: Option<String>,
    /// ISO 8601 date or date-time, inclusive; not before `from`.
    #[param(schema_with = crate::http::conversations::dto::time_bound)]
    pub to: Option<String>,
    /// 1 to 100; default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub take: Option<QueryInt>,
    #[param(value_type = Option<i64>, minimum = 0)]
    pub skip: Option<QueryInt>,
    /// Comma-separated provider types.
    #[param(pattern = r"^[^\x00]+$")]
    pub llm_type: Option<String>,
    /// Comma-separated models.
    #[param(pattern = r"^[^\x00]+$")]
    pub llm_model: Option<String>,
    /// Comma-separated hosts.
    #[param(pattern = r"^[^\x00]+$")]
    pub host: Option<String>,
    /// Comma-separated LOW, MEDIUM, HIGH (violations only).
    #[param(pattern = "^(LOW|MEDIUM|HIGH)(,(LOW|MEDIUM|HIGH))*$")]
    pub severity: Option<String>,
    /// true or false (violations only).
    #[param(value_type = Option<bool>)]
    pub block: Option<QueryBool>,
}

pub use crate::service::params::comma_list;

/// Who created or last changed a policy.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersonDto {
    pub id: String,
    pub name: String,
    pub last_name: String,
    pub email: String,
}

impl From<Person> for PersonDto {
    fn from(p: Person) -> Self {
        PersonDto {
            id: p.id.to_string(),
            name: p.name,
            last_name: p.last_name,
            email: p.email,
        }
    }
}

/// A workspace or repository, named.
#[derive(Serialize, ToSchema)]
pub struct NamedDto {
    pub id: String,
    pub name: String,
}

/// The platform's PolicyDTO, with our `patterns`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDto {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub content: String,
    pub risk_type: String,
    pub action_type: i32,
    pub patterns: Vec<String>,
    pub created_by: PersonDto,
    pub created_at: String,
    pub last_updated_by: PersonDto,
    pub last_updated_at: String,
    pub workspace_id: Option<String>,
    pub repo_id: Option<String>,
    pub workspace: Option<NamedDto>,
    pub repo: Option<NamedDto>,
}

impl From<PolicyView> for PolicyDto {
    fn from(p: PolicyView) -> Self {
        let named = |n: Option<(uuid::Uuid, String)>| {
            n.map(|(id, name)| NamedDto {
                id: id.to_string(),
                name,
            })
        };
        PolicyDto {
            id: p.id.to_string(),
            org_id: p.org_id.to_string(),
            name: p.name,
            content: p.content,
            risk_type: p.risk_type.as_str().into(),
            action_type: p.action_type.number(),
            patterns: p.patterns,
            created_by: p.created_by.into(),
            created_at: rfc3339(p.created_at),
            last_updated_by: p.updated_by.into(),
            last_updated_at: rfc3339(p.updated_at),
            workspace_id: p.workspace.as_ref().map(|(id, _)| id.to_string()),
            repo_id: p.repo.as_ref().map(|(id, _)| id.to_string()),
            workspace: named(p.workspace),
            repo: named(p.repo),
        }
    }
}

/// `{success, policy}`.
#[derive(Serialize, ToSchema)]
pub struct PolicyReply {
    pub success: bool,
    pub policy: PolicyDto,
}

/// `{success, policies}`.
#[derive(Serialize, ToSchema)]
pub struct PoliciesReply {
    pub success: bool,
    pub policies: Vec<PolicyDto>,
}

/// The platform's PolicyViolationDTO. `repoAiApiKeyId`/`Name` name the
/// provider configuration that served the turn (empty for the operator's).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViolationDto {
    pub id: String,
    pub policy_id: String,
    pub policy_name: String,
    pub timestamp: String,
    pub explanation: String,
    pub conversation_id: Option<String>,
    pub repo_id: String,
    pub repo_name: String,
    pub user_id: String,
    pub user_name: String,
    pub repo_ai_api_key_id: String,
    pub repo_ai_api_key_name: String,
    pub severity: Option<String>,
    pub block: bool,
    pub llm_type: String,
    pub llm_model: String,
    pub host: String,
}

impl From<ViolationView> for ViolationDto {
    fn from(v: ViolationView) -> Self {
        ViolationDto {
            id: v.id.to_string(),
            policy_id: v.policy_id.to_string(),
            policy_name: v.policy_name,
            timestamp: rfc3339(v.at),
            explanation: v.explanation,
            conversation_id: v.conversation_id.map(|c| c.to_string()),
            repo_id: v.repo_id.to_string(),
            repo_name: v.repo_name,
            user_id: v.user_id.to_string(),
            user_name: v.user_name,
            repo_ai_api_key_id: v.ai_llm_id.map(|i| i.to_string()).unwrap_or_default(),
            repo_ai_api_key_name: v.ai_llm_name.unwrap_or_default(),
            severity: Some(v.severity.as_str().into()),
            block: v.block,
            llm_type: v.llm_type,
            llm_model: v.llm_model,
            host: v.host,
        }
    }
}

/// The platform's PolicyAlertDTO: the violation's fields without
/// `explanation`, `severity` and `block`, with the alert's `message`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertDto {
    pub id: String,
    pub policy_id: String,
    pub policy_name: String,
    pub timestamp: String,
    pub message: String,
    pub conversation_id: Option<String>,
    pub repo_id: String,
    pub repo_name: String,
    pub user_id: String,
    pub user_name: String,
    pub repo_ai_api_key_id: String,
    pub repo_ai_api_key_name: String,
    pub llm_type: String,
    pub llm_model: String,
    pub host: String,
}

impl From<ViolationView> for AlertDto {
    fn from(v: ViolationView) -> Self {
        let (id, message, at) = v.alert.unwrap_or((v.id, String::new(), v.at));
        AlertDto {
            id: id.to_string(),
            policy_id: v.policy_id.to_string(),
            policy_name: v.policy_name,
            timestamp: rfc3339(at),
            message,
            conversation_id: v.conversation_id.map(|c| c.to_string()),
            repo_id: v.repo_id.to_string(),
            repo_name: v.repo_name,
            user_id: v.user_id.to_string(),
            user_name: v.user_name,
            repo_ai_api_key_id: v.ai_llm_id.map(|i| i.to_string()).unwrap_or_default(),
            repo_ai_api_key_name: v.ai_llm_name.unwrap_or_default(),
            llm_type: v.llm_type,
            llm_model: v.llm_model,
            host: v.host,
        }
    }
}

/// `{success, violations, total, skip, take}`.
#[derive(Serialize, ToSchema)]
pub struct ViolationsReply {
    pub success: bool,
    pub violations: Vec<ViolationDto>,
    pub total: i64,
    pub skip: i64,
    pub take: i64,
}

/// `{success, alerts, total, skip, take}`.
#[derive(Serialize, ToSchema)]
pub struct AlertsReply {
    pub success: bool,
    pub alerts: Vec<AlertDto>,
    pub total: i64,
    pub skip: i64,
    pub take: i64,
}

/// `PUT /org/webhook`.
#[derive(Deserialize, ToSchema)]
pub struct WebhookBody {
    /// Where alerts are posted: http(s), not an internal address.
    #[serde(default)]
    #[schema(value_type = String, pattern = r"^https?://[A-Za-z][A-Za-z0-9.-]*[A-Za-z0-9](:[0-9]{1,4})?(/[^\s?#]*)?$", required = true)]
    pub url: JsonText,
}

/// A webhook (never its secret).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDto {
    pub url: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<WebhookView> for WebhookDto {
    fn from(w: WebhookView) -> Self {
        WebhookDto {
            url: w.url,
            created_at: rfc3339(w.created_at),
            updated_at: rfc3339(w.updated_at),
        }
    }
}

/// `{success, webhook, secret}`: the signing secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct WebhookSetReply {
    pub success: bool,
    pub webhook: WebhookDto,
    pub secret: String,
}

/// `{success, webhook}` (null when none is set).
#[derive(Serialize, ToSchema)]
pub struct WebhookReply {
    pub success: bool,
    pub webhook: Option<WebhookDto>,
}

/// A delivery of an alert.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryDto {
    pub id: String,
    pub alert_id: String,
    /// `pending`, `delivered` or `failed` (after 10 attempts).
    pub status: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

impl From<DeliveryView> for DeliveryDto {
    fn from(d: DeliveryView) -> Self {
        DeliveryDto {
            id: d.id.to_string(),
            alert_id: d.alert_id.to_string(),
            status: d.status,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            created_at: rfc3339(d.created_at),
            delivered_at: d.delivered_at.map(rfc3339),
        }
    }
}

/// `{success, deliveries, total, skip, take}`.
#[derive(Serialize, ToSchema)]
pub struct DeliveriesReply {
    pub success: bool,
    pub deliveries: Vec<DeliveryDto>,
    pub total: i64,
    pub skip: i64,
    pub take: i64,
}

/// `GET /org/webhook/deliveries`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub take: Option<QueryInt>,
    #[param(value_type = Option<i64>, minimum = 0)]
    pub skip: Option<QueryInt>,
}
