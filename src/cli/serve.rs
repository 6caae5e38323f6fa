//! `serve`: migrate (unless behind a transaction-mode pooler), prepare the demo if asked, and run the server until a
//! signal.

use crate::config::ServeArgs;
use crate::store::Store;

/// Runs the service on `store` as `args` say, until Ctrl-C or SIGTERM.
pub async fn serve(store: Store, args: ServeArgs) -> anyhow::Result<()> {
    if store.behind_transaction_pooler() {
        tracing::info!(
            "behind a transaction-mode pooler: migrations are `migrate`'s, on a direct URL"
        );
    } else {
        let ran = store.migrate().await?;
        if ran > 0 {
            tracing::info!(migrations = ran, "database migrated");
        }
    }
    let demo = if args.demo {
        Some(crate::demo::prepare(&store).await?)
    } else {
        None
    };
    let config = args.into_config();
    let tls = config.tls.is_some();
    let running = crate::server::start(store, config).await?;
    if let Some(demo) = demo {
        // A closed stdout must not stop a server: say so on stderr and go on.
        if let Err(e) = super::emit(demo.instructions(running.http_addr, running.grpc_addr, tls)) {
            tracing::warn!(error = %e, "could not print the demo instructions");
        }
    }
    running.wait().await
}
