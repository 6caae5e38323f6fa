//! `conversation-service`: see `cli` for the commands.

use std::process::ExitCode;

use clap::Parser as _;

use conversation_service::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line, like every other failure; --help has the rest.
            let text = e.render().to_string();
            let reason: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{}", reason.join(" "));
            return ExitCode::from(2);
        }
    };
    let default_log = match cli.command {
        cli::Command::Serve(_) => "info",
        _ => "warn",
    };
    cli::init_logging(cli.log_format, cli.log.as_deref(), default_log);
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::describe(&e));
            ExitCode::FAILURE
        }
    }
}
