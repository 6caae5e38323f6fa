//! `admin`: one module per command group; each prints only its result on
//! stdout.

mod budget;
mod events;
mod llm;
mod org;
mod policy;
mod repo;
mod token;
pub mod user;
mod workspace;

use clap::Subcommand;

use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Organizations.
    #[command(subcommand)]
    Org(org::OrgCommand),
    /// Users.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Workspaces and their members.
    #[command(subcommand)]
    Workspace(workspace::WorkspaceCommand),
    /// Repositories.
    #[command(subcommand)]
    Repo(repo::RepoCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// The audit trail.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Model provider configurations of a workspace.
    #[command(subcommand)]
    Llm(Box<llm::LlmCommand>),
    /// Governance policies.
    #[command(subcommand)]
    Policy(Box<policy::PolicyCommand>),
    /// An organization's alert webhook.
    #[command(subcommand)]
    Webhook(Box<policy::WebhookCommand>),
    /// Token budgets of organizations and workspaces.
    #[command(subcommand)]
    Budget(budget::BudgetCommand),
    /// The master key of tenants' secrets.
    #[command(subcommand)]
    Secrets(Box<llm::SecretsCommand>),
}

/// Runs an admin command against `store`.
pub async fn run(store: &Store, cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Org(cmd) => org::run(store, cmd).await,
        AdminCommand::User(cmd) => user::run(store, cmd).await,
        AdminCommand::Workspace(cmd) => workspace::run(store, cmd).await,
        AdminCommand::Repo(cmd) => repo::run(store, cmd).await,
        AdminCommand::Token(cmd) => token::run(store, cmd).await,
        AdminCommand::Events(cmd) => events::run(store, cmd).await,
        AdminCommand::Llm(cmd) => llm::run(store, *cmd).await,
        AdminCommand::Secrets(cmd) => llm::rotate(store, *cmd).await,
        AdminCommand::Policy(cmd) => policy::run(store, *cmd).await,
        AdminCommand::Webhook(cmd) => policy::webhook(store, *cmd).await,
        AdminCommand::Budget(cmd) => budget::run(store, cmd).await,
    }
}

/// A name given on the command line, trimmed; empty is refused.
fn non_empty(what: &str, value: String) -> anyhow::Result<String> {
    let value = value.trim().to_owned();
    if value.is_empty() {
        anyhow::bail!("--{what} must not be empty");
    }
    Ok(value)
}
