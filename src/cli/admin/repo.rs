//! `admin repo`.

use clap::Subcommand;
use uuid::Uuid;

use super::non_empty;
use crate::cli::emit;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create a repository; prints its id. Without --workspace it is orphaned.
    Create {
        #[arg(long)]
        org: Uuid,
        #[arg(long)]
        name: String,
        #[arg(long)]
        workspace: Option<Uuid>,
    },
    /// Disable a repository: no new conversations on it.
    Disable {
        #[arg(long)]
        repo: Uuid,
    },
}

pub async fn run(store: &Store, cmd: RepoCommand) -> anyhow::Result<()> {
    match cmd {
        RepoCommand::Create {
            org,
            name,
            workspace,
        } => emit(
            store
                .create_repo(org, non_empty("name", name)?, workspace)
                .await?,
        ),
        RepoCommand::Disable { repo } => {
            store.disable_repo(repo).await?;
            eprintln!("repository {repo} disabled");
            Ok(())
        }
    }
}
