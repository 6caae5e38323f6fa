//! `admin workspace`.

use clap::Subcommand;
use uuid::Uuid;

use super::non_empty;
use crate::cli::emit;
use crate::domain::Access;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace; prints its id.
    Create {
        #[arg(long)]
        org: Uuid,
        #[arg(long)]
        name: String,
    },
    /// Give a user access to a workspace (replaces their level).
    Grant {
        #[arg(long)]
        workspace: Uuid,
        #[arg(long)]
        user: Uuid,
        /// read, write or admin.
        #[arg(long)]
        access: Access,
    },
    /// Soft-delete a workspace.
    Delete {
        #[arg(long)]
        workspace: Uuid,
    },
}

pub async fn run(store: &Store, cmd: WorkspaceCommand) -> anyhow::Result<()> {
    match cmd {
        WorkspaceCommand::Create { org, name } => emit(
            store
                .create_workspace(org, non_empty("name", name)?)
                .await?,
        ),
        WorkspaceCommand::Grant {
            workspace,
            user,
            access,
        } => {
            store.grant(workspace, user, access).await?;
            eprintln!("user {user} has {access} access to workspace {workspace}");
            Ok(())
        }
        WorkspaceCommand::Delete { workspace } => {
            store.delete_workspace(workspace).await?;
            eprintln!("workspace {workspace} deleted");
            Ok(())
        }
    }
}
