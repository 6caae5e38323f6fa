//! The command line: `serve`, `migrate` and the `admin` commands (one file
//! per command group under `admin/`).
//!
//! stdout carries only results (an id, a token, JSON lines, the demo block) so
//! scripts can capture them; logs and messages for people go to stderr. Bad
//! input exits non-zero with a one-line reason.

mod admin;
mod serve;

use std::time::Duration;

use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret as _, SecretString};

pub use crate::config::{ServeArgs, parse_duration, parse_duration_or_zero};
use crate::store::{Backend, Pooler, Store, StoreOptions};
pub use admin::AdminCommand;

/// The default database: an SQLite file next to where the service runs.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/conversations.db";

/// Conversations tied to code repositories, over gRPC and REST/JSON.
#[derive(Debug, Parser)]
#[command(name = "conversation-service", version, about)]
pub struct Cli {
    /// Database: sqlite://relative.db, sqlite:///absolute.db or postgres://user@host/db.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true,
        hide_env_values = true, value_parser = database_url)]
    pub database_url: SecretString,

    /// Most database connections kept open [default: 16 on PostgreSQL, 4 on SQLite,
    /// where writers take turns anyway and more threads only contend].
    #[arg(long, env = "DATABASE_POOL_SIZE", global = true)]
    pub database_pool_size: Option<usize>,

    /// What stands between the service and PostgreSQL: `transaction` for
    /// PgBouncer in transaction mode (no reused prepared statements, each
    /// operation in one transaction; run `migrate` on a direct URL).
    #[arg(long, env = "DATABASE_POOLER", value_enum, default_value_t = Pooler::None, global = true)]
    pub database_pooler: Pooler,

    /// A PostgreSQL streaming replica (a direct postgres:// URL) that serves
    /// lists, gets, messages, statistics and the feed; each caller still
    /// reads their own writes, and reads go to the primary while it is down
    /// or lagging.
    #[arg(long, env = "DATABASE_READ_URL", global = true, hide_env_values = true, value_parser = database_url)]
    pub database_read_url: Option<SecretString>,

    /// How far behind the primary the read replica may be and still serve reads.
    #[arg(long, env = "DATABASE_READ_MAX_LAG", default_value = "5s", global = true,
        value_parser = crate::config::parse_duration)]
    pub database_read_max_lag: Duration,

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

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A database URL (it may hold a password): never printed.
fn database_url(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

impl Cli {
    fn store_options(&self) -> StoreOptions {
        let sqlite = matches!(
            crate::store::parse_url(self.database_url.expose_secret()),
            Ok((Backend::Sqlite, _))
        );
        StoreOptions {
            pool_size: self
                .database_pool_size
                .unwrap_or(if sqlite { 4 } else { 16 }),
            acquire_timeout: Duration::from_secs(self.database_acquire_timeout),
            pooler: self.database_pooler,
            read_url: self
                .database_read_url
                .as_ref()
                .map(|u| u.expose_secret().to_owned()),
            read_max_lag: self.database_read_max_lag,
            ..StoreOptions::default()
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let store = Store::open(cli.database_url.expose_secret(), &cli.store_options())?;
    match cli.command {
        Command::Migrate => {
            let ran = store.migrate().await?;
            eprintln!("{ran} migration(s) applied");
        }
        Command::Serve(args) => serve::serve(store, *args).await?,
        Command::Admin(cmd) => {
            if !store.behind_transaction_pooler() {
                store.migrate().await?;
            }
            admin::run(&store, cmd).await?;
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
    use crate::domain::OrgRole;

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
            Command::Admin(AdminCommand::User(admin::user::UserCommand::Create {
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
        assert_eq!(cli.database_url.expose_secret(), "sqlite:///tmp/x.db");
        assert!(
            !format!("{cli:?}").contains("/tmp/x.db"),
            "the URL is redacted"
        );
    }
}
