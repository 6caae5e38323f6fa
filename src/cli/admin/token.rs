//! `admin token`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use uuid::Uuid;

use crate::auth::{TOKEN_PREFIX, generate_token, hash_token};
use crate::cli::emit;
use crate::config::parse_duration;
use crate::store::Store;
use crate::store::admin::TokenRef;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; prints it (it is shown only this once).
    Create {
        #[arg(long)]
        user: Uuid,
        #[arg(long, default_value = "cli")]
        name: String,
        /// Lifetime such as 90m, 12h, 30d or 2w; no expiry if left out.
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<Duration>,
    },
    /// Revoke a token, given as the token itself or as its id.
    Revoke {
        #[arg(long)]
        token: String,
    },
}

pub async fn run(store: &Store, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            user,
            name,
            expires_in,
        } => {
            let expires_at = expires_in
                .map(|d| -> anyhow::Result<DateTime<Utc>> {
                    Ok(crate::store::types::now() + chrono::Duration::from_std(d)?)
                })
                .transpose()?;
            let token = generate_token();
            store.create_token(user, name, &token, expires_at).await?;
            emit(token.secret)
        }
        TokenCommand::Revoke { token } => {
            let target = if token.starts_with(TOKEN_PREFIX) {
                TokenRef::Hash(hash_token(&token))
            } else if let Ok(id) = Uuid::try_parse(&token) {
                TokenRef::Id(id)
            } else {
                anyhow::bail!("--token takes a token ({TOKEN_PREFIX}...) or a token id");
            };
            store.revoke_token(target).await?;
            eprintln!("token revoked");
            Ok(())
        }
    }
}
