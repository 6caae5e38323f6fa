//! Running the service: both listeners over one store, stopped together.
//!
//! Shutdown (Ctrl-C, SIGTERM, or [`Running::shutdown`]) marks the gRPC health
//! NOT_SERVING, stops accepting connections, lets requests in flight finish
//! within [`SHUTDOWN_GRACE`], and returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pb::conversation_service_server::ConversationServiceServer;
use crate::service::ConversationApi;
use crate::store::Store;

/// How long requests in flight may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A started service.
pub struct Running {
    /// Where the REST gateway listens.
    pub http_addr: SocketAddr,
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Starts a graceful shutdown and waits for it to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits until the service stops (after a signal or [`Running::shutdown`]).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task failed")?
    }

    /// A token that stops the service when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Binds both listeners and starts serving `store` on them.
pub async fn start(
    store: Store,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
) -> anyhow::Result<Running> {
    let http = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {http_addr}"))?;
    let grpc = TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {grpc_addr}"))?;
    let http_addr = http.local_addr()?;
    let grpc_addr = grpc.local_addr()?;

    let watched = store.clone();
    let api = Arc::new(ConversationApi::new(store));
    let (grpc_router, health) = crate::grpc::router(api.clone()).await?;
    let http_router = crate::http::router(api);

    let stop = CancellationToken::new();
    let grpc_stop = stop.clone();
    let grpc_task = tokio::spawn(async move {
        grpc_router
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                grpc_stop.cancelled_owned(),
            )
            .await
    });
    let http_stop = stop.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(http, http_router)
            .with_graceful_shutdown(http_stop.cancelled_owned())
            .await
    });

    tokio::spawn(watch_database(watched, health.clone(), stop.clone()));

    let signal_stop = stop.clone();
    let task = tokio::spawn(async move {
        tokio::select! {
            () = signal_stop.cancelled() => {}
            () = shutdown_signal() => tracing::info!("shutdown signal received"),
        }
        signal_stop.cancel();
        health
            .set_not_serving::<ConversationServiceServer<ConversationApi>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        tracing::info!("draining requests in flight");
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            let (g, h) = tokio::join!(grpc_task, http_task);
            g.context("gRPC task")?.context("gRPC server")?;
            h.context("HTTP task")?.context("HTTP server")?;
            anyhow::Ok(())
        })
        .await;
        match drained {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("grace period over; stopping with requests still in flight");
                Ok(())
            }
        }
    });

    tracing::info!(%http_addr, %grpc_addr, "serving");
    Ok(Running {
        http_addr,
        grpc_addr,
        stop,
        task,
    })
}

/// How often the gRPC health status is checked against the database.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps `grpc.health.v1` truthful: NOT_SERVING (for "" and the service) while
/// the database does not answer, SERVING again once it does. Stops at shutdown,
/// which owns the status from then on.
async fn watch_database(
    store: Store,
    health: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    let mut serving = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {}
        }
        let ok = matches!(
            tokio::time::timeout(2 * HEALTH_CHECK_INTERVAL, store.ping()).await,
            Ok(Ok(()))
        );
        if ok == serving || stop.is_cancelled() {
            continue;
        }
        serving = ok;
        let status = if ok {
            tracing::info!("database reachable again: SERVING");
            tonic_health::ServingStatus::Serving
        } else {
            tracing::warn!("database unreachable: NOT_SERVING");
            tonic_health::ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        health
            .set_service_status(crate::grpc::SERVICE_NAME, status)
            .await;
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
