//! `admin policy`: governance policies, managed as a user of the
//! organization (`--as USER`) through the same operations and rules as the
//! API; `admin webhook`: the organization's alert webhook, set by the
//! operator.

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::llm::{Acting, cli_context, plain_service, service_as, service_with_keys};
use crate::cli::emit;
use crate::config::SecretsArgs;
use crate::domain::{Caller, OrgRole};
use crate::service::policies::{self, CreatePolicy, ListPolicies, PolicyView, UpdatePolicy};
use crate::service::providers::provider_name;
use crate::store::Store;

/// `admin policy create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    acting: Acting,
    #[arg(long)]
    org: Uuid,
    /// A workspace (or a repository's workspace) policy.
    #[arg(long)]
    workspace: Option<Uuid>,
    /// A repository policy (give its --workspace too).
    #[arg(long)]
    repo: Option<Uuid>,
    #[arg(long)]
    name: String,
    /// What is prohibited or required (judged by the model).
    #[arg(long, default_value = "")]
    content: String,
    /// LOW, MEDIUM or HIGH.
    #[arg(long)]
    risk: String,
    /// 0 log, 1 alert, 2 block.
    #[arg(long)]
    action: i64,
    /// A regular expression that decides the policy (repeatable).
    #[arg(long = "pattern")]
    patterns: Vec<String>,
}

/// `admin policy update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    acting: Acting,
    #[arg(long)]
    id: Uuid,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    content: Option<String>,
    #[arg(long)]
    risk: Option<String>,
    #[arg(long)]
    action: Option<i64>,
    /// Replaces the patterns (repeatable).
    #[arg(long = "pattern")]
    patterns: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create a policy; prints its id.
    Create(Box<CreateArgs>),
    /// Print one scope's policies, one JSON object per line.
    List {
        #[command(flatten)]
        acting: Acting,
        #[arg(long)]
        org: Uuid,
        #[arg(long)]
        workspace: Option<Uuid>,
        #[arg(long)]
        repo: Option<Uuid>,
    },
    /// Change a policy's name, content, risk, action or patterns.
    Update(Box<UpdateArgs>),
    /// Delete a policy (softly).
    Delete {
        #[command(flatten)]
        acting: Acting,
        #[arg(long)]
        id: Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Set an organization's alert webhook; prints its signing secret (shown
    /// this once).
    Set {
        #[arg(long)]
        org: Uuid,
        #[arg(long)]
        url: String,
        #[command(flatten)]
        secrets: SecretsArgs,
    },
    /// Print the organization's webhook as JSON (never its secret).
    Show {
        #[arg(long)]
        org: Uuid,
    },
    /// Remove the organization's webhook.
    Delete {
        #[arg(long)]
        org: Uuid,
    },
    /// Print the webhook's deliveries, newest first, one JSON object per line.
    Deliveries {
        #[arg(long)]
        org: Uuid,
        #[arg(long, default_value_t = 100)]
        take: i64,
    },
}

fn policy_json(p: PolicyView) -> serde_json::Value {
    serde_json::json!({
        "id": p.id,
        "orgId": p.org_id,
        "workspaceId": p.workspace.map(|(id, _)| id),
        "repoId": p.repo.map(|(id, _)| id),
        "name": p.name,
        "content": p.content,
        "patterns": p.patterns,
        "riskType": p.risk_type.as_str(),
        "actionType": p.action_type.number(),
    })
}

pub async fn run(store: &Store, cmd: PolicyCommand) -> anyhow::Result<()> {
    let ctx = cli_context();
    match cmd {
        PolicyCommand::Create(args) => {
            let (service, caller) = service_as(store, &args.acting).await?;
            let input = CreatePolicy {
                org_id: args.org,
                workspace_id: args.workspace,
                repo_id: args.repo,
                name: provider_name(Some(args.name))?,
                content: policies::content(Some(args.content))?,
                patterns: policies::patterns(args.patterns)?,
                risk_type: policies::risk_type(Some(&args.risk))?,
                action_type: policies::action_type(Some(args.action))?,
            };
            emit(service.create_policy(&caller, input, &ctx).await?.id)
        }
        PolicyCommand::List {
            acting,
            org,
            workspace,
            repo,
        } => {
            let (service, caller) = service_as(store, &acting).await?;
            let input = ListPolicies {
                org_id: org,
                workspace_id: workspace,
                repo_id: repo,
            };
            for p in service.list_policies(&caller, input).await? {
                emit(policy_json(p))?;
            }
            Ok(())
        }
        PolicyCommand::Update(args) => {
            let (service, caller) = service_as(store, &args.acting).await?;
            let input = UpdatePolicy {
                id: args.id,
                name: args.name.map(|n| provider_name(Some(n))).transpose()?,
                content: args
                    .content
                    .map(|c| policies::content(Some(c)))
                    .transpose()?,
                patterns: args.patterns.map(policies::patterns).transpose()?,
                risk_type: args
                    .risk
                    .map(|r| policies::risk_type(Some(&r)))
                    .transpose()?,
                action_type: args
                    .action
                    .map(|a| policies::action_type(Some(a)))
                    .transpose()?,
            };
            service.update_policy(&caller, input, &ctx).await?;
            eprintln!("policy {} updated", args.id);
            Ok(())
        }
        PolicyCommand::Delete { acting, id } => {
            let (service, caller) = service_as(store, &acting).await?;
            service.delete_policy(&caller, id, &ctx).await?;
            eprintln!("policy {id} deleted");
            Ok(())
        }
    }
}

/// The operator, acting for organization `org` (recorded with no user).
async fn operator(store: &Store, org: Uuid) -> anyhow::Result<Caller> {
    anyhow::ensure!(store.org_exists(org).await?, "organization {org} not found");
    Ok(Caller {
        user_id: Uuid::nil(),
        org_id: org,
        role: OrgRole::Owner,
        email: String::new(),
        name: None,
        last_name: None,
    })
}

pub async fn webhook(store: &Store, cmd: WebhookCommand) -> anyhow::Result<()> {
    let ctx = cli_context();
    match cmd {
        WebhookCommand::Set { org, url, secrets } => {
            let caller = operator(store, org).await?;
            let service = service_with_keys(store, &secrets).await?;
            let (_, secret) = service.set_webhook(&caller, &url, &ctx).await?;
            emit(secret)
        }
        WebhookCommand::Show { org } => {
            let caller = operator(store, org).await?;
            let service = plain_service(store);
            let webhook = service.get_webhook(&caller).await?;
            emit(serde_json::json!(webhook.map(|w| serde_json::json!({
                "url": w.url,
                "createdAt": w.created_at,
                "updatedAt": w.updated_at,
            }))))
        }
        WebhookCommand::Delete { org } => {
            let caller = operator(store, org).await?;
            let service = plain_service(store);
            service.delete_webhook(&caller, &ctx).await?;
            eprintln!("webhook of {org} removed");
            Ok(())
        }
        WebhookCommand::Deliveries { org, take } => {
            let caller = operator(store, org).await?;
            let service = plain_service(store);
            let (list, _) = service
                .list_deliveries(&caller, take.clamp(1, 100), 0)
                .await?;
            for d in list {
                emit(serde_json::json!({
                    "id": d.id,
                    "alertId": d.alert_id,
                    "status": d.status,
                    "attempts": d.attempts,
                    "lastStatus": d.last_status,
                    "lastError": d.last_error,
                    "createdAt": d.created_at,
                    "deliveredAt": d.delivered_at,
                }))?;
            }
            Ok(())
        }
    }
}
