//! `admin events`.

use clap::Subcommand;
use uuid::Uuid;

use crate::cli::emit;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print an organization's events, newest first, one JSON object per line.
    List {
        #[arg(long)]
        org: Uuid,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
}

pub async fn run(store: &Store, cmd: EventsCommand) -> anyhow::Result<()> {
    match cmd {
        EventsCommand::List { org, limit } => {
            if !store.org_exists(org).await? {
                anyhow::bail!("organization {org} not found");
            }
            for e in store.list_events(org, limit).await? {
                let line = serde_json::json!({
                    "id": e.id,
                    "timestamp": e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    "orgId": e.org_id,
                    "userId": e.user_id,
                    "workspaceId": e.workspace_id,
                    "context": e.context,
                    "contextId": e.context_id,
                    "event": e.event,
                    "jsonData": e.json_data,
                });
                emit(line)?;
            }
            Ok(())
        }
    }
}
