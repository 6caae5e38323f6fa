//! The command line: `serve`, `migrate` and the `admin` commands.
//!
//! stdout carries only results (an id, a token, JSON lines, the demo block) so
//! scripts can capture them; logs and messages for people go to stderr. Bad
//! input exits non-zero with a one-line reason.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use crate::auth::jwt::JwtConfig;
use crate::auth::{TOKEN_PREFIX, generate_token, hash_token};
use crate::domain::{Access, OrgRole};
use crate::provider::ProviderConfig;
use crate::store::admin::{NewUser, TokenRef};
use crate::store::{Store, StoreOptions};

/// The default database: an SQLite file next to where the service runs.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/conversations.db";

/// Conversations tied to code repositories, over gRPC and REST/JSON.
#[derive(Parser)]
#[command(name = "conversation-service", version, about)]
pub struct Cli {
    /// Database: sqlite://relative.db, sqlite:///absolute.db or postgres://user@host/db.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true, hide_env_values = true)]
    pub database_url: String,

    /// Most database connections kept open [default: 16 on PostgreSQL, 4 on SQLite,
    /// where writers take turns anyway and more threads only contend].
    #[arg(long, env = "DATABASE_POOL_SIZE", global = true)]
    pub database_pool_size: Option<usize>,

    /// Seconds a request waits for a free database connection before a 503.
    #[arg(
        long,
        env = "DATABASE_ACQUIRE_TIMEOUT",
        default_value_t = 5,
        global = true
    )]
    pub database_acquire_timeout: u64,

    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter, such as info or conversation_service=debug,request=warn
    /// [default: info for serve, warn for the other commands].
    #[arg(long, env = "RUST_LOG", global = true)]
    pub log: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC and REST (applies pending migrations first).
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage organizations, users, workspaces, repositories, tokens; read events.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the REST/JSON gateway.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Address of the gRPC server.
    #[arg(long, env = "GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Serve GET /metrics on this address alone instead of on the HTTP port.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// PEM certificate chain: serve both listeners over TLS (needs --tls-key).
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Longest a request may take: REST answers 504, gRPC DEADLINE_EXCEEDED.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// API requests in flight at most (both transports together); more are
    /// refused at once with 503 / RESOURCE_EXHAUSTED instead of queueing.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_requests: u32,
    /// How long an HTTP client may take to send a request's head (slow clients
    /// and idle keep-alive connections are closed after it).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How long an Idempotency-Key is remembered after the create it answered.
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,
    /// After SIGTERM or Ctrl-C: how long to keep serving while health says
    /// NOT_SERVING and /readyz 503, so load balancers stop sending first.
    #[arg(long, env = "SHUTDOWN_DELAY", default_value = "1s", value_parser = parse_duration_or_zero)]
    pub shutdown_delay: Duration,
    /// Then: how long requests in flight may take to finish.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub provider: ProviderArgs,
    /// Create a demo organization (once) and print a fresh token and ready-to-paste commands.
    #[arg(long, env = "DEMO")]
    pub demo: bool,
}

/// JWTs from an identity provider, accepted beside API tokens once a key is given.
#[derive(Args)]
pub struct JwtArgs {
    /// Shared HMAC secret (32 bytes or more) for HS256/384/512 JWTs.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA or EC) for RS*/PS*/ES* JWTs.
    #[arg(long, env = "JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// JWKS file; a JWT's `kid` picks the key.
    #[arg(long, env = "JWT_JWKS")]
    pub jwt_jwks: Option<PathBuf>,
    /// Accepted `alg` values, comma-separated [default: HS256 with a secret,
    /// RS256 with an RSA key or a JWKS, ES256 with an EC key].
    #[arg(long, env = "JWT_ALGORITHMS", value_delimiter = ',')]
    pub jwt_algorithms: Vec<String>,
    /// Required `iss` claim.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Accepted `aud` values, comma-separated; a JWT must name one.
    #[arg(long, env = "JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in whole seconds (`0` for none).
    #[arg(long, env = "JWT_LEEWAY", default_value = "30s", value_parser = parse_duration_or_zero)]
    pub jwt_leeway: Duration,
}

// Written by hand so that secrets (the JWT secret, a password in the
// database URL) can never reach a log through `{:?}`.
impl std::fmt::Debug for JwtArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtArgs")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwt_jwks", &self.jwt_jwks)
            .field("jwt_algorithms", &self.jwt_algorithms)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway", &self.jwt_leeway)
            .finish()
    }
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("database_url", &"<redacted>")
            .field("database_pool_size", &self.database_pool_size)
            .field("database_acquire_timeout", &self.database_acquire_timeout)
            .field("log_format", &self.log_format)
            .field("log", &self.log)
            .field("command", &self.command)
            .finish()
    }
}

impl JwtArgs {
    fn config(self) -> JwtConfig {
        JwtConfig {
            algorithms: self.jwt_algorithms,
            secret: self.jwt_secret,
            public_key: self.jwt_public_key,
            jwks: self.jwt_jwks,
            issuer: self.jwt_issuer,
            audience: self.jwt_audience,
            leeway_seconds: self.jwt_leeway.as_secs(),
        }
    }
}

/// The model provider: any OpenAI-compatible Chat Completions API.
#[derive(Args)]
pub struct ProviderArgs {
    /// Its API base, such as https://api.openai.com/v1 or http://127.0.0.1:11434/v1
    /// (Ollama); prompting answers 501 without it.
    #[arg(long, env = "PROVIDER_URL")]
    pub provider_url: Option<String>,
    /// Its API key, sent as a bearer token.
    #[arg(long, env = "PROVIDER_API_KEY", hide_env_values = true)]
    pub provider_api_key: Option<String>,
    /// The models callers may ask for, comma-separated [default: any].
    #[arg(long, env = "PROVIDER_MODELS", value_delimiter = ',')]
    pub provider_models: Vec<String>,
    /// Longest a completion may take (then 504).
    #[arg(long, env = "PROVIDER_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub provider_timeout: Duration,
}

impl std::fmt::Debug for ProviderArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.config().fmt(f)
    }
}

impl ProviderArgs {
    fn config(&self) -> ProviderConfig {
        ProviderConfig {
            base_url: self.provider_url.clone(),
            api_key: self.provider_api_key.clone(),
            models: self.provider_models.clone(),
            timeout: self.provider_timeout,
        }
    }
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Users.
    #[command(subcommand)]
    User(UserCommand),
    /// Workspaces and their members.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Repositories.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit trail.
    #[command(subcommand)]
    Events(EventsCommand),
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization; prints its id.
    Create {
        #[arg(long)]
        name: String,
    },
}

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

/// Parses a lifetime: a positive whole number and a unit (ms, s, m, h, d, w).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90m, 12h, 30d or 2w"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(format!("{s:?} has no known unit (ms, s, m, h, d or w)")),
    };
    if n == 0 {
        return Err("a duration must be positive".into());
    }
    n.checked_mul(millis)
        .filter(|&ms| ms <= 100 * 365 * 86_400_000)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Like [`parse_duration`], and `0` for none.
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        Ok(Duration::ZERO)
    } else {
        parse_duration(s)
    }
}

impl Cli {
    fn store_options(&self) -> StoreOptions {
        StoreOptions {
            pool_size: self.database_pool_size.unwrap_or(
                match crate::store::parse_url(&self.database_url) {
                    Ok((crate::store::Backend::Sqlite, _)) => 4,
                    _ => 16,
                },
            ),
            acquire_timeout: Duration::from_secs(self.database_acquire_timeout),
            ..StoreOptions::default()
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let store = Store::open(&cli.database_url, &cli.store_options())?;
    match cli.command {
        Command::Migrate => {
            let ran = store.migrate().await?;
            eprintln!("{ran} migration(s) applied");
        }
        Command::Serve(args) => serve(store, *args).await?,
        Command::Admin(cmd) => {
            store.migrate().await?;
            admin(&store, cmd).await?;
        }
    }
    Ok(())
}

async fn serve(store: Store, args: ServeArgs) -> anyhow::Result<()> {
    let ran = store.migrate().await?;
    if ran > 0 {
        tracing::info!(migrations = ran, "database migrated");
    }
    let demo = if args.demo {
        Some(crate::demo::prepare(&store).await?)
    } else {
        None
    };
    let config = crate::server::Config {
        http_addr: args.http_addr,
        grpc_addr: args.grpc_addr,
        metrics_addr: args.metrics_addr,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| crate::tls::TlsFiles { cert, key }),
        jwt: args.jwt.config(),
        provider: args.provider.config(),
        request_timeout: args.request_timeout,
        idempotency_ttl: args.idempotency_ttl,
        header_read_timeout: args.header_read_timeout,
        max_concurrent_requests: args.max_concurrent_requests as usize,
        shutdown_delay: args.shutdown_delay,
        shutdown_grace: args.shutdown_grace,
    };
    let tls = config.tls.is_some();
    let running = crate::server::start(store, config).await?;
    if let Some(demo) = demo {
        // A closed stdout must not stop a server: say so on stderr and go on.
        if let Err(e) = emit(demo.instructions(running.http_addr, running.grpc_addr, tls)) {
            tracing::warn!(error = %e, "could not print the demo instructions");
        }
    }
    running.wait().await
}

async fn admin(store: &Store, cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Org(OrgCommand::Create { name }) => {
            emit(store.create_org(non_empty("name", name)?).await?)?;
        }
        AdminCommand::User(UserCommand::Create {
            org,
            email,
            name,
            last_name,
            role,
        }) => {
            let email = email.trim().to_lowercase();
            if !is_plausible_email(&email) {
                bail!("{email:?} is not an email address");
            }
            let user = NewUser {
                org_id: org,
                email,
                name,
                last_name,
                role,
            };
            emit(store.create_user(user).await?)?;
        }
        AdminCommand::User(UserCommand::Disable { user }) => {
            store.disable_user(user).await?;
            eprintln!("user {user} disabled");
        }
        AdminCommand::Workspace(WorkspaceCommand::Create { org, name }) => {
            emit(
                store
                    .create_workspace(org, non_empty("name", name)?)
                    .await?,
            )?;
        }
        AdminCommand::Workspace(WorkspaceCommand::Grant {
            workspace,
            user,
            access,
        }) => {
            store.grant(workspace, user, access).await?;
            eprintln!("user {user} has {access} access to workspace {workspace}");
        }
        AdminCommand::Workspace(WorkspaceCommand::Delete { workspace }) => {
            store.delete_workspace(workspace).await?;
            eprintln!("workspace {workspace} deleted");
        }
        AdminCommand::Repo(RepoCommand::Create {
            org,
            name,
            workspace,
        }) => {
            let repo = store.create_repo(org, non_empty("name", name)?, workspace);
            emit(repo.await?)?;
        }
        AdminCommand::Repo(RepoCommand::Disable { repo }) => {
            store.disable_repo(repo).await?;
            eprintln!("repository {repo} disabled");
        }
        AdminCommand::Token(TokenCommand::Create {
            user,
            name,
            expires_in,
        }) => {
            let expires_at = expires_in
                .map(|d| -> anyhow::Result<DateTime<Utc>> {
                    Ok(crate::store::types::now() + chrono::Duration::from_std(d)?)
                })
                .transpose()?;
            let token = generate_token();
            store.create_token(user, name, &token, expires_at).await?;
            emit(token.secret)?;
        }
        AdminCommand::Token(TokenCommand::Revoke { token }) => {
            let target = if token.starts_with(TOKEN_PREFIX) {
                TokenRef::Hash(hash_token(&token))
            } else if let Ok(id) = Uuid::try_parse(&token) {
                TokenRef::Id(id)
            } else {
                bail!("--token takes a token ({TOKEN_PREFIX}...) or a token id");
            };
            store.revoke_token(target).await?;
            eprintln!("token revoked");
        }
        AdminCommand::Events(EventsCommand::List { org, limit }) => {
            if !store.org_exists(org).await? {
                bail!("organization {org} not found");
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
        }
    }
    Ok(())
}

/// Writes one result line to stdout; a closed stdout is an error, not a panic.
fn emit(line: impl std::fmt::Display) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::anyhow!("cannot write to stdout: {e}"))
}

fn non_empty(what: &str, value: String) -> anyhow::Result<String> {
    let value = value.trim().to_owned();
    if value.is_empty() {
        bail!("--{what} must not be empty");
    }
    Ok(value)
}

fn is_plausible_email(s: &str) -> bool {
    matches!(s.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !s.contains(char::is_whitespace))
}

/// Sets up logging to stderr: `filter` (from --log or RUST_LOG) if given and
/// valid, else `default`.
pub fn init_logging(format: LogFormat, filter: Option<&str>, default: &str) {
    let filter = filter
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// The context a failing command reports in its one line.
pub fn describe(e: &anyhow::Error) -> String {
    let mut parts = vec![e.to_string()];
    parts.extend(e.chain().skip(1).map(ToString::to_string));
    parts.dedup();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(1_209_600)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "d",
            "30",
            "30x",
            "-1d",
            "0d",
            "1.5h",
            "99999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_parses_as_documented() {
        let cli = Cli::try_parse_from([
            "cs",
            "admin",
            "user",
            "create",
            "--org",
            "0193a000-0000-7000-8000-000000000001",
            "--email",
            "a@b.c",
            "--role",
            "owner",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Admin(AdminCommand::User(UserCommand::Create {
                role: OrgRole::Owner,
                ..
            }))
        ));
        assert!(
            Cli::try_parse_from([
                "cs", "admin", "user", "create", "--org", "x", "--email", "a@b.c"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "cs",
                "admin",
                "workspace",
                "grant",
                "--workspace",
                "0193a000-0000-7000-8000-000000000001",
                "--user",
                "0193a000-0000-7000-8000-000000000001",
                "--access",
                "owner"
            ])
            .is_err()
        );
        let cli = Cli::try_parse_from(["cs", "serve", "--database-url", "sqlite:///tmp/x.db"])
            .expect("parses");
        assert_eq!(cli.database_url, "sqlite:///tmp/x.db");
    }
}
