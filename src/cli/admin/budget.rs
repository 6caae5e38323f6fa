//! `admin budget`: token budgets of an organization or a workspace, set by
//! the operator through the same operations as the API.

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::llm::plain_service;
use crate::cli::emit;
use crate::service::usage::budgets::{BudgetScope, BudgetView, Period, budget_tokens};
use crate::store::Store;

/// Whose budget: `--org` or `--workspace` (its organization is looked up).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Whose {
    #[arg(long)]
    org: Option<Uuid>,
    #[arg(long)]
    workspace: Option<Uuid>,
}

#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Set (create or replace) a budget; prints it as JSON.
    Set {
        #[command(flatten)]
        whose: Whose,
        /// day or month (UTC).
        #[arg(long)]
        period: String,
        /// The limit, tokens per period (1 to 10^15).
        #[arg(long, allow_negative_numbers = true)]
        tokens: i64,
    },
    /// Print the budgets of an organization (or of one workspace) with what
    /// their current periods spent, one JSON object per line.
    Show {
        #[command(flatten)]
        whose: Whose,
    },
    /// Clear a budget.
    Clear {
        #[command(flatten)]
        whose: Whose,
        #[arg(long)]
        period: String,
    },
}

/// The organization, the scope and its id.
async fn resolve(store: &Store, whose: Whose) -> anyhow::Result<(Uuid, BudgetScope, Uuid)> {
    match (whose.org, whose.workspace) {
        (Some(org), _) => {
            if !store.org_exists(org).await? {
                anyhow::bail!("organization {org} not found");
            }
            Ok((org, BudgetScope::Org, org))
        }
        (None, Some(id)) => match store.find_workspace(id).await? {
            Some(w) if w.deleted_at.is_none() => Ok((w.org_id, BudgetScope::Workspace(id), id)),
            _ => anyhow::bail!("workspace {id} not found"),
        },
        (None, None) => anyhow::bail!("give --org or --workspace"),
    }
}

fn line(b: &BudgetView) -> serde_json::Value {
    let time =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    serde_json::json!({
        "id": b.id,
        "orgId": b.org_id,
        "workspaceId": b.workspace_id,
        "period": b.period.as_str(),
        "tokens": b.tokens,
        "used": b.used,
        "reserved": b.reserved,
        "periodStart": time(b.period_start),
        "periodEnd": time(b.period_end),
    })
}

pub async fn run(store: &Store, cmd: BudgetCommand) -> anyhow::Result<()> {
    let service = plain_service(store);
    match cmd {
        BudgetCommand::Set {
            whose,
            period,
            tokens,
        } => {
            let period = Period::parse(&period)?;
            let tokens = budget_tokens(tokens)?;
            let (org, scope, scope_id) = resolve(store, whose).await?;
            let budget = service
                .set_budget_of(org, scope, scope_id, period, tokens, Uuid::nil())
                .await?;
            emit(line(&budget))
        }
        BudgetCommand::Show { whose } => {
            let (org, scope, scope_id) = resolve(store, whose).await?;
            let only = matches!(scope, BudgetScope::Workspace(_)).then_some(scope_id);
            for budget in service.budgets_of(org, only).await? {
                emit(line(&budget))?;
            }
            Ok(())
        }
        BudgetCommand::Clear { whose, period } => {
            let period = Period::parse(&period)?;
            let (org, _, scope_id) = resolve(store, whose).await?;
            service.clear_budget_of(org, scope_id, period).await?;
            eprintln!("budget cleared");
            Ok(())
        }
    }
}
