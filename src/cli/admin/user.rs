//! `admin user`.

use clap::Subcommand;
use uuid::Uuid;

use crate::cli::emit;
use crate::domain::OrgRole;
use crate::store::Store;
use crate::store::admin::NewUser;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prints its id.
    Create {
        #[arg(long)]
        org: Uuid,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
        /// user, billing, workspaces, admin or owner.
        #[arg(long, default_value = "user")]
        role: OrgRole,
    },
    /// Disable a user: their tokens stop working.
    Disable {
        #[arg(long)]
        user: Uuid,
    },
}

pub async fn run(store: &Store, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create {
            org,
            email,
            name,
            last_name,
            role,
        } => {
            let email = email.trim().to_lowercase();
            if !is_plausible_email(&email) {
                anyhow::bail!("{email:?} is not an email address");
            }
            let user = NewUser {
                org_id: org,
                email,
                name,
                last_name,
                role,
            };
            emit(store.create_user(user).await?)
        }
        UserCommand::Disable { user } => {
            store.disable_user(user).await?;
            eprintln!("user {user} disabled");
            Ok(())
        }
    }
}

fn is_plausible_email(s: &str) -> bool {
    matches!(s.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !s.contains(char::is_whitespace))
}
