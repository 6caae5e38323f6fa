//! Running the service: both listeners over one store, stopped together.
//!
//! Shutdown (Ctrl-C, SIGTERM, or [`Running::shutdown`]) marks the gRPC health
//! NOT_SERVING, stops accepting connections, lets requests in flight finish
//! within [`Config::shutdown_grace`], and returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::jwt::{JwtConfig, JwtVerifier};
use crate::grpc::GrpcApi;
use crate::http::HttpOptions;
use crate::http::serve::ConnLimits;
use crate::metrics::Metrics;
use crate::observe::Admission;
use crate::pb::conversation_service_server::ConversationServiceServer;
use crate::provider::{Provider, ProviderConfig};
use crate::service::Service;
use crate::store::Store;
use crate::tls::{self, GatedListener, TlsFiles};

/// How the service is run: where it listens and what it accepts.
#[derive(Debug, Clone)]
pub struct Config {
    /// The REST/JSON gateway.
    pub http_addr: SocketAddr,
    /// The gRPC server.
    pub grpc_addr: SocketAddr,
    /// A listener for `GET /metrics` alone; on the HTTP port when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// TLS for both the HTTP and the gRPC listener; plaintext when `None`.
    pub tls: Option<TlsFiles>,
    /// JWTs accepted beside API tokens, when a key is configured.
    pub jwt: JwtConfig,
    /// The model provider prompts go to (none: prompting answers 501).
    pub provider: ProviderConfig,
    /// Longest a request may take (REST: 504, gRPC: DEADLINE_EXCEEDED).
    pub request_timeout: Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// How long an HTTP client may take to send a request's head.
    pub header_read_timeout: Duration,
    /// API requests in flight at most, both transports together; more are
    /// refused at once (REST 503, gRPC RESOURCE_EXHAUSTED).
    pub max_concurrent_requests: usize,
    /// How long, once shutdown starts, the service keeps serving while
    /// reporting NOT_SERVING (gRPC health) and 503 (`/readyz`), so that load
    /// balancers stop sending before it stops accepting.
    pub shutdown_delay: Duration,
    /// How long requests in flight may take to finish once it stops accepting.
    pub shutdown_grace: Duration,
}

impl Config {
    /// Loopback on ports the OS picks, defaults otherwise (tests, tools).
    pub fn local() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            http_addr: any,
            grpc_addr: any,
            metrics_addr: None,
            tls: None,
            jwt: JwtConfig::default(),
            provider: ProviderConfig {
                timeout: Duration::from_secs(60),
                ..ProviderConfig::default()
            },
            request_timeout: Duration::from_secs(15),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            header_read_timeout: ConnLimits::default().header_read_timeout,
            max_concurrent_requests: 256,
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// A started service.
pub struct Running {
    /// Where the REST gateway listens.
    pub http_addr: SocketAddr,
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where `GET /metrics` is served alone, if apart from the gateway.
    pub metrics_addr: Option<SocketAddr>,
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

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Binds the listeners and starts serving `store` on them.
pub async fn start(store: Store, config: Config) -> anyhow::Result<Running> {
    // Everything that can be refused is checked before anything listens.
    let jwt = if config.jwt.enabled() {
        Some(Arc::new(JwtVerifier::new(&config.jwt)?))
    } else {
        None
    };
    let tls = match &config.tls {
        Some(files) => Some((
            tls::acceptor(files, &[b"h2", b"http/1.1"])?,
            tls::acceptor(files, &[b"h2"])?,
        )),
        None => None,
    };
    let http = bind(config.http_addr, "HTTP").await?;
    let grpc = bind(config.grpc_addr, "gRPC").await?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(bind(addr, "metrics").await?),
        None => None,
    };
    let http_addr = http.local_addr()?;
    let grpc_addr = grpc.local_addr()?;
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };

    let watched = store.clone();
    let ttl = chrono::TimeDelta::from_std(config.idempotency_ttl)
        .context("the idempotency key lifetime is too long")?;
    let metrics = Arc::new(Metrics::new());
    let admission = Admission::new(config.max_concurrent_requests, &metrics);
    let provider = Provider::new(&config.provider)?;
    // A prompt may take as long as the provider may, and a little more.
    let request_timeout = if provider.is_some() {
        config
            .request_timeout
            .max(config.provider.timeout + Duration::from_secs(5))
    } else {
        config.request_timeout
    };
    let api = Arc::new(
        Service::new(store, jwt, metrics)
            .with_idempotency_ttl(ttl)
            .with_provider(provider),
    );
    let (grpc_router, health) =
        crate::grpc::router(api.clone(), request_timeout, admission.clone()).await?;
    let http_options = HttpOptions {
        request_timeout,
        metrics: metrics_listener.is_none(),
        admission,
    };
    let http_router = crate::http::router(api.clone(), &http_options);

    // `stop` starts the shutdown; `close` (later) stops accepting.
    let stop = CancellationToken::new();
    let close = CancellationToken::new();
    let limits = ConnLimits {
        header_read_timeout: config.header_read_timeout,
    };
    // A client has the header read timeout to send its first byte (in
    // plaintext) or finish its handshake (TLS, 10 s).
    let first_byte = config.header_read_timeout;
    let (grpc_task, http_task) = match tls {
        None => serve_both(
            GatedListener::plain(grpc, first_byte, close.clone())?,
            GatedListener::plain(http, first_byte, close.clone())?,
            grpc_router,
            http_router,
            limits,
            &close,
        ),
        Some((http_tls, grpc_tls)) => serve_both(
            GatedListener::tls(grpc, grpc_tls, close.clone())?,
            GatedListener::tls(http, http_tls, close.clone())?,
            grpc_router,
            http_router,
            limits,
            &close,
        ),
    };
    if let Some(listener) = metrics_listener {
        let metrics_stop = close.clone();
        let router = crate::http::metrics_router(api.clone());
        tokio::spawn(crate::http::serve::serve(
            listener,
            router,
            limits,
            metrics_stop,
        ));
    }

    tokio::spawn(sweep_idempotency_keys(
        watched.clone(),
        config.idempotency_ttl,
        stop.clone(),
    ));
    let watcher = tokio::spawn(watch_database(watched, health.clone(), stop.clone()));

    let signal_stop = stop.clone();
    let (delay, grace) = (config.shutdown_delay, config.shutdown_grace);
    let task = tokio::spawn(async move {
        tokio::select! {
            () = signal_stop.cancelled() => {}
            () = shutdown_signal() => tracing::info!("shutdown signal received"),
        }
        signal_stop.cancel();
        api.start_draining();
        // The watcher ends on `stop`; once it has, nothing but this task sets
        // the health status, so NOT_SERVING cannot be overwritten.
        let _ = watcher.await;
        health
            .set_not_serving::<ConversationServiceServer<GrpcApi>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        if !delay.is_zero() {
            tracing::info!(delay = ?delay, "NOT_SERVING; still accepting for the shutdown delay");
            tokio::time::sleep(delay).await;
        }
        close.cancel();
        tracing::info!("stopped accepting; draining requests in flight");
        let drained = tokio::time::timeout(grace, async {
            let (g, h) = tokio::join!(grpc_task, http_task);
            g.context("gRPC task")?.context("gRPC server")?;
            h.context("HTTP task")?;
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

    let scheme = if config.tls.is_some() {
        "TLS"
    } else {
        "plaintext"
    };
    tracing::info!(%http_addr, %grpc_addr, ?metrics_addr, transport_security = scheme, "serving");
    Ok(Running {
        http_addr,
        grpc_addr,
        metrics_addr,
        stop,
        task,
    })
}

/// Serves gRPC and HTTP on their listeners (plaintext or TLS alike) until
/// `close`.
fn serve_both<Io>(
    grpc: GatedListener<Io>,
    http: GatedListener<Io>,
    grpc_router: crate::grpc::GrpcRouter,
    http_router: axum::Router,
    limits: ConnLimits,
    close: &CancellationToken,
) -> (
    JoinHandle<Result<(), tonic::transport::Error>>,
    JoinHandle<()>,
)
where
    Io: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
{
    let grpc_stop = close.clone();
    (
        tokio::spawn(async move {
            grpc_router
                .serve_with_incoming_shutdown(grpc.into_stream(), grpc_stop.cancelled_owned())
                .await
        }),
        tokio::spawn(crate::http::serve::serve(
            http,
            http_router,
            limits,
            close.clone(),
        )),
    )
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

/// Deletes expired idempotency keys now and then (every `ttl`, at least
/// every second and at most every ten minutes); a lookup ignores expired keys
/// anyway, so this only keeps the table small.
async fn sweep_idempotency_keys(store: Store, ttl: Duration, stop: CancellationToken) {
    let every = ttl.clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match store.purge_idempotency_keys(chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "expired idempotency keys deleted"),
            Err(e) => tracing::debug!(error = %e, "could not delete expired idempotency keys"),
        }
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
