//! `admin llm`: model provider configurations, managed as a user of the
//! organization (`--as USER`) through the same operations and rules as the
//! API; and `admin secrets rotate`.

use std::sync::Arc;

use clap::{Args, Subcommand};
use secrecy::SecretString;
use uuid::Uuid;

use crate::cli::emit;
use crate::config::SecretsArgs;
use crate::domain::Transport;
use crate::secrets::Sealed;
use crate::service::providers::{
    self, AttachRepo, CreateProvider, ListProviders, MASKED_KEY, UpdateProvider,
};
use crate::service::{RequestContext, Service};
use crate::store::Store;

/// Who acts, and the keys that seal secrets.
#[derive(Debug, Args)]
pub struct Acting {
    /// The user the command acts as (an organization or workspace administrator).
    #[arg(long = "as", value_name = "USER")]
    pub user: Uuid,
    #[command(flatten)]
    pub secrets: SecretsArgs,
}

/// `admin llm create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    acting: Acting,
    #[arg(long)]
    workspace: Uuid,
    #[arg(long)]
    name: String,
    /// OPENAI, GOOGLE, ANTHROPIC, AWS or OTHER.
    #[arg(long = "type")]
    ai_type: String,
    /// The API base; by default the provider's public one (OPENAI,
    /// ANTHROPIC, GOOGLE); AWS and OTHER need one.
    #[arg(long)]
    endpoint: Option<String>,
    /// The variable holding the API key.
    #[arg(long, default_value = "PROVIDER_SECRET")]
    secret_env: String,
    /// The variable holding an access key (AWS), if any.
    #[arg(long)]
    key_env: Option<String>,
}

/// `admin llm update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    acting: Acting,
    #[arg(long)]
    id: Uuid,
    #[arg(long)]
    name: Option<String>,
    #[arg(long = "type")]
    ai_type: Option<String>,
    #[arg(long)]
    endpoint: Option<String>,
    /// A variable holding a new API key.
    #[arg(long)]
    secret_env: Option<String>,
    /// A variable holding a new access key.
    #[arg(long)]
    key_env: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LlmCommand {
    /// Connect a provider to a workspace; prints its id. The API key is read
    /// from the environment variable --secret-env names, never from the command line.
    Create(CreateArgs),
    /// Print the configurations the user sees, one JSON object per line.
    List {
        #[command(flatten)]
        acting: Acting,
        #[arg(long)]
        workspace: Option<Uuid>,
    },
    /// Change a configuration's name, type, endpoint or credentials.
    Update(UpdateArgs),
    /// Delete a configuration (refused while repositories use it).
    Delete {
        #[command(flatten)]
        acting: Acting,
        #[arg(long)]
        id: Uuid,
    },
    /// Attach a repository of the configuration's workspace.
    Attach {
        #[command(flatten)]
        acting: Acting,
        #[arg(long)]
        id: Uuid,
        #[arg(long)]
        repo: Uuid,
    },
    /// Detach a repository.
    Detach {
        #[command(flatten)]
        acting: Acting,
        #[arg(long)]
        id: Uuid,
        #[arg(long)]
        repo: Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-seal every stored secret with the current key (give the old ones
    /// with --secrets-previous-keys); prints how many were re-sealed.
    Rotate {
        #[command(flatten)]
        secrets: SecretsArgs,
    },
}

/// A secret read from the environment variable `name`.
fn from_env(name: &str) -> anyhow::Result<SecretString> {
    std::env::var(name)
        .map(SecretString::from)
        .map_err(|_| anyhow::anyhow!("the environment variable {name} is not set"))
}

/// The service as `acting.user`, with the keys.
pub(super) async fn service_as(
    store: &Store,
    acting: &Acting,
) -> anyhow::Result<(Service, crate::domain::Caller)> {
    let service = service_with_keys(store, &acting.secrets).await?;
    let caller = service.user_caller(acting.user).await?;
    Ok((service, caller))
}

/// The service with the keys `secrets` names.
pub(super) async fn service_with_keys(
    store: &Store,
    secrets: &SecretsArgs,
) -> anyhow::Result<Service> {
    let keyring = crate::server::keyring(store, secrets).await?;
    Ok(plain_service(store)
        .with_keyring(keyring)
        .with_private_endpoints(secrets.provider_allow_private))
}

/// The service for what needs no key.
pub(super) fn plain_service(store: &Store) -> Service {
    Service::new(
        store.clone(),
        None,
        Arc::new(crate::metrics::Metrics::new()),
    )
}

pub(super) fn cli_context() -> RequestContext {
    RequestContext {
        request_id: Uuid::now_v7().to_string(),
        transport: Transport::Cli,
    }
}

pub async fn run(store: &Store, cmd: LlmCommand) -> anyhow::Result<()> {
    let ctx = cli_context();
    match cmd {
        LlmCommand::Create(args) => create(store, args, &ctx).await,
        LlmCommand::List { acting, workspace } => {
            let (service, caller) = service_as(store, &acting).await?;
            let input = ListProviders {
                workspace_id: workspace,
            };
            for p in service.list_providers(&caller, input).await? {
                emit(serde_json::json!({
                    "id": p.id,
                    "workspaceId": p.workspace_id,
                    "name": p.name,
                    "aiType": p.ai_type.as_str(),
                    "endpoint": p.endpoint,
                    "key": p.has_key.then_some(MASKED_KEY),
                    "repos": p.repos.iter().map(|r| r.repo_id).collect::<Vec<_>>(),
                }))?;
            }
            Ok(())
        }
        LlmCommand::Update(args) => update(store, args, &ctx).await,
        LlmCommand::Delete { acting, id } => {
            let (service, caller) = service_as(store, &acting).await?;
            service.delete_provider(&caller, id, &ctx).await?;
            eprintln!("AI configuration {id} deleted");
            Ok(())
        }
        LlmCommand::Attach { acting, id, repo } => {
            let (service, caller) = service_as(store, &acting).await?;
            let input = AttachRepo { id, repo_id: repo };
            service.attach_repo(&caller, input, &ctx).await?;
            eprintln!("repository {repo} attached to AI configuration {id}");
            Ok(())
        }
        LlmCommand::Detach { acting, id, repo } => {
            let (service, caller) = service_as(store, &acting).await?;
            let input = AttachRepo { id, repo_id: repo };
            service.detach_repo(&caller, input, &ctx).await?;
            eprintln!("repository {repo} detached from AI configuration {id}");
            Ok(())
        }
    }
}

/// `admin llm create`.
async fn create(store: &Store, args: CreateArgs, ctx: &RequestContext) -> anyhow::Result<()> {
    let CreateArgs {
        acting,
        workspace,
        name,
        ai_type,
        endpoint,
        secret_env,
        key_env,
    } = args;
    let (service, caller) = service_as(store, &acting).await?;
    let input = CreateProvider {
        workspace_id: workspace,
        name: providers::provider_name(Some(name))?,
        ai_type: providers::ai_type(Some(&ai_type))?,
        endpoint: endpoint.unwrap_or_default(),
        key: key_env.as_deref().map(from_env).transpose()?,
        secret: from_env(&secret_env)?,
    };
    emit(service.create_provider(&caller, input, ctx).await?)
}

/// `admin llm update`.
async fn update(store: &Store, args: UpdateArgs, ctx: &RequestContext) -> anyhow::Result<()> {
    let UpdateArgs {
        acting,
        id,
        name,
        ai_type,
        endpoint,
        secret_env,
        key_env,
    } = args;
    let (service, caller) = service_as(store, &acting).await?;
    let input = UpdateProvider {
        id,
        name: name
            .map(|n| providers::provider_name(Some(n)))
            .transpose()?,
        ai_type: ai_type
            .as_deref()
            .map(|t| providers::ai_type(Some(t)))
            .transpose()?,
        endpoint,
        key: key_env.as_deref().map(from_env).transpose()?,
        secret: secret_env.as_deref().map(from_env).transpose()?,
    };
    service.update_provider(&caller, input, ctx).await?;
    eprintln!("AI configuration {id} updated");
    Ok(())
}

/// `admin secrets rotate`.
pub async fn rotate(store: &Store, cmd: SecretsCommand) -> anyhow::Result<()> {
    let SecretsCommand::Rotate { secrets } = cmd;
    let keyring = crate::server::keyring(store, &secrets)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!("no secrets key is configured: give --secrets-key-file or SECRETS_KEY")
        })?;
    let mut resealed = 0;
    for row in store.all_ai_llms().await? {
        // A configuration changed meanwhile is read again (and is then
        // usually sealed with the current key already); one deleted is done.
        let mut row = Some(row);
        while let Some(current) = row.take() {
            if !keyring.is_stale(&Sealed {
                key_id: current.secrets_key_id.clone(),
                bytes: Vec::new(),
            }) {
                break;
            }
            let (key, secret) = providers::open_pair(&keyring, &current)?;
            let (key, secret) = providers::seal_pair(&keyring, current.id, key.as_ref(), &secret);
            let swapped = store
                .reseal_ai_llm(
                    current.id,
                    current.secret_sealed,
                    key.map(|k| k.bytes),
                    secret.bytes,
                    secret.key_id,
                )
                .await?;
            if swapped {
                resealed += 1;
            } else {
                row = store.find_ai_llm(current.id).await?;
            }
        }
    }
    resealed += rotate_webhooks(store, &keyring).await?;
    emit(resealed)
}

/// Re-seals every webhook secret not sealed with the current key; how many.
async fn rotate_webhooks(store: &Store, keyring: &crate::secrets::Keyring) -> anyhow::Result<u64> {
    use crate::secrets::Field;
    let mut resealed = 0;
    for row in store.all_webhooks().await? {
        let mut row = Some(row);
        while let Some(current) = row.take() {
            let sealed = Sealed {
                key_id: current.secrets_key_id.clone(),
                bytes: current.secret_sealed.clone(),
            };
            if !keyring.is_stale(&sealed) {
                break;
            }
            let secret = keyring.open(&sealed, current.org_id, Field::WebhookSecret)?;
            let fresh = keyring.seal(&secret, current.org_id, Field::WebhookSecret);
            let swapped = store
                .reseal_webhook(
                    current.org_id,
                    current.secret_sealed,
                    fresh.bytes,
                    fresh.key_id,
                )
                .await?;
            if swapped {
                resealed += 1;
            } else {
                row = store.find_webhook(current.org_id).await?;
            }
        }
    }
    Ok(resealed)
}
