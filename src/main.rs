//! `conversation-service`: see `cli` for the commands.

use std::process::ExitCode;

use clap::Parser as _;
use conversation_service::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        cli::Command::Serve(_) => "info",
        _ => "warn",
    };
    cli::init_logging(default_log);
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::describe(&e));
            ExitCode::FAILURE
        }
    }
}
