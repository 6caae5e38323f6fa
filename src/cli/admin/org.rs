//! `admin org`.

use clap::Subcommand;

use super::non_empty;
use crate::cli::emit;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization; prints its id.
    Create {
        #[arg(long)]
        name: String,
    },
}

pub async fn run(store: &Store, cmd: OrgCommand) -> anyhow::Result<()> {
    match cmd {
        OrgCommand::Create { name } => emit(store.create_org(non_empty("name", name)?).await?),
    }
}
