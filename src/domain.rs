//! The platform's vocabulary: organization roles, workspace access levels and
//! the authenticated caller. Values are parsed at the edge into these types so
//! that an invalid role or access level cannot exist past it.

use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A user's role in their organization (the platform's USER 0, BILLING 1,
/// WORKSPACES 2, ADMINISTRATORS 254, OWNER 255).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgRole {
    User,
    Billing,
    Workspaces,
    Admin,
    Owner,
}

impl OrgRole {
    /// Every role, in the platform's order.
    pub const ALL: [OrgRole; 5] = [
        OrgRole::User,
        OrgRole::Billing,
        OrgRole::Workspaces,
        OrgRole::Admin,
        OrgRole::Owner,
    ];

    /// The name stored in `users.org_role` and used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::User => "user",
            OrgRole::Billing => "billing",
            OrgRole::Workspaces => "workspaces",
            OrgRole::Admin => "admin",
            OrgRole::Owner => "owner",
        }
    }

    /// "Organization administrator": ADMINISTRATORS or OWNER. They reach every
    /// workspace of their organization.
    pub fn is_org_admin(self) -> bool {
        matches!(self, OrgRole::Admin | OrgRole::Owner)
    }
}

/// A workspace member's access level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
    Admin,
}

impl Access {
    /// Every access level, weakest first.
    pub const ALL: [Access; 3] = [Access::Read, Access::Write, Access::Admin];

    /// The name stored in `workspace_members.access` and used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }
}

/// Who wrote a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    User,
    Assistant,
}

impl MessageRole {
    /// Both roles.
    pub const ALL: [MessageRole; 2] = [MessageRole::User, MessageRole::Assistant];

    /// The name stored in `messages.role` and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
        }
    }
}

impl FromStr for MessageRole {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_named("message role", &MessageRole::ALL, MessageRole::as_str, s)
    }
}

/// The kind of a model provider configuration: which API it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiType {
    /// OpenAI, or any OpenAI-compatible endpoint.
    OpenAi,
    /// Google Gemini (its OpenAI-compatible endpoint).
    Google,
    /// Anthropic's Messages API.
    Anthropic,
    /// AWS Bedrock (its OpenAI-compatible endpoint).
    Aws,
    /// A custom endpoint speaking the OpenAI API (vLLM, Ollama, gateways).
    Other,
}

impl AiType {
    /// Every kind, in the platform's order.
    pub const ALL: [AiType; 5] = [
        AiType::OpenAi,
        AiType::Google,
        AiType::Anthropic,
        AiType::Aws,
        AiType::Other,
    ];

    /// The platform's name, as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            AiType::OpenAi => "OPENAI",
            AiType::Google => "GOOGLE",
            AiType::Anthropic => "ANTHROPIC",
            AiType::Aws => "AWS",
            AiType::Other => "OTHER",
        }
    }
}

impl FromStr for AiType {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_named("aiType", &AiType::ALL, AiType::as_str, s)
    }
}

impl fmt::Display for AiType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How serious a policy's violation is (a violation's severity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RiskType {
    Low,
    Medium,
    High,
}

impl RiskType {
    /// Every level, lowest first.
    pub const ALL: [RiskType; 3] = [RiskType::Low, RiskType::Medium, RiskType::High];

    /// The platform's name, as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskType::Low => "LOW",
            RiskType::Medium => "MEDIUM",
            RiskType::High => "HIGH",
        }
    }
}

impl FromStr for RiskType {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_named("riskType", &RiskType::ALL, RiskType::as_str, s)
    }
}

/// What a policy's violation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ActionType {
    /// `0`: the violation is recorded; the turn goes on.
    Log,
    /// `1`: recorded, an alert raised and administrators notified; the turn goes on.
    Alert,
    /// `2`: recorded and alerted, and the turn stops.
    Block,
}

impl ActionType {
    /// The platform's number.
    pub fn number(self) -> i32 {
        match self {
            ActionType::Log => 0,
            ActionType::Alert => 1,
            ActionType::Block => 2,
        }
    }

    /// The action a number names.
    pub fn from_number(n: i64) -> Option<ActionType> {
        match n {
            0 => Some(ActionType::Log),
            1 => Some(ActionType::Alert),
            2 => Some(ActionType::Block),
            _ => None,
        }
    }
}

/// A role or access level name that is not one of the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of: {expected})")]
pub struct UnknownName {
    kind: &'static str,
    value: String,
    expected: String,
}

fn parse_named<T: Copy>(
    kind: &'static str,
    all: &[T],
    name: fn(T) -> &'static str,
    s: &str,
) -> Result<T, UnknownName> {
    all.iter()
        .copied()
        .find(|v| name(*v).eq_ignore_ascii_case(s))
        .ok_or_else(|| UnknownName {
            kind,
            value: s.to_owned(),
            expected: all.iter().map(|v| name(*v)).collect::<Vec<_>>().join(", "),
        })
}

impl FromStr for OrgRole {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_named("role", &OrgRole::ALL, OrgRole::as_str, s)
    }
}

impl FromStr for Access {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_named("access", &Access::ALL, Access::as_str, s)
    }
}

impl fmt::Display for OrgRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub role: OrgRole,
    pub email: String,
    pub name: Option<String>,
    pub last_name: Option<String>,
}

/// Which transport a request came in on; recorded in the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
    /// The admin command line, acting as a user.
    Cli,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Cli => "cli",
            Transport::Http => "http",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_access_parse_their_names_only() {
        for role in OrgRole::ALL {
            assert_eq!(role.as_str().parse::<OrgRole>(), Ok(role));
        }
        for access in Access::ALL {
            assert_eq!(access.as_str().parse::<Access>(), Ok(access));
        }
        assert_eq!("ADMIN".parse::<OrgRole>(), Ok(OrgRole::Admin));
        let err = "root".parse::<OrgRole>().expect_err("not a role");
        assert_eq!(
            err.to_string(),
            "unknown role \"root\" (expected one of: user, billing, workspaces, admin, owner)"
        );
        assert!("none".parse::<Access>().is_err());
    }

    #[test]
    fn only_admins_and_owners_are_org_admins() {
        let admins: Vec<_> = OrgRole::ALL
            .into_iter()
            .filter(|r| r.is_org_admin())
            .collect();
        assert_eq!(admins, vec![OrgRole::Admin, OrgRole::Owner]);
    }
}
